"""Training the compiler: optimizer, jitted train/eval steps, the loop with checkpoints."""
