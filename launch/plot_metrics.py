"""Plot a training run's metrics.jsonl: train loss, and the held-out losses with the document's
own adapter vs no adapter vs another document's adapter (the signal that the compiler works), and
the share of the adapters that differs between documents (right axis).

  python -m launch.plot_metrics --workdir=workdir/stage1 --out=workdir/stage1/curve.png
"""

from __future__ import annotations

import json
import os

from absl import flags, logging

from launch import common
from lskill_jax.training.validation import DOC_SHARE

flags.DEFINE_string("workdir", None, "Training workdir (reads metrics.jsonl).", required=True)
flags.DEFINE_string("out", "", "PNG path (default: WORKDIR/curve.png).")
FLAGS = flags.FLAGS


def read_metrics(path: str) -> list[dict]:
  """The records of metrics.jsonl; a line cut short by a kill is skipped with a warning rather
  than failing the plot."""
  rows, bad = [], []
  with open(path, "rb") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except (UnicodeDecodeError, json.JSONDecodeError):
        row = None
      if isinstance(row, dict) and "step" in row and "kind" in row:
        rows.append(row)
      else:
        bad.append(n)
  if bad:
    logging.warning("%s: skipped %d unreadable line(s) (%s); a run killed mid-write leaves one.",
                    path, len(bad), ", ".join(map(str, bad[:5])))
  return rows


def main(argv):
  del argv
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  lines = read_metrics(os.path.join(FLAGS.workdir, "metrics.jsonl"))
  # A resumed run logs the steps after its last checkpoint again: the later line wins.
  rows = sorted({(r["kind"], r["step"]): r for r in lines}.values(), key=lambda r: r["step"])
  train = [r for r in rows if r["kind"] == "train"]
  val = [r for r in rows if r["kind"] == "val"]
  modes = sorted({k.split("/")[0] for r in val for k in r if "/" in k})
  fig, axes = plt.subplots(1, 1 + len(modes), figsize=(5 * (1 + len(modes)), 4))
  axes = list(axes) if len(modes) else [axes]
  axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
  axes[0].set(title="train loss (per target token)", xlabel="step")
  for ax, mode in zip(axes[1:], modes):
    for cond, style in (("own", "-o"), ("none", "--s"), ("other", ":^")):
      ax.plot([r["step"] for r in val], [r[f"{mode}/{cond}"] for r in val], style,
              label={"own": "own adapter", "none": "no adapter", "other": "other doc's adapter"}[cond])
    ax.set(title=f"held-out {mode} loss", xlabel="step")
    handles = ax.get_legend_handles_labels()[0]
    shares = [(r["step"], r[f"{mode}/{DOC_SHARE}"]) for r in val if f"{mode}/{DOC_SHARE}" in r]
    if shares:  # logs written before this metric existed lack it
      twin = ax.twinx()
      handles += twin.semilogy(*zip(*shares), color="grey", lw=1, label="adapter doc share (right)")
    ax.legend(handles=handles, loc="center right")
  fig.tight_layout()
  out = FLAGS.out or os.path.join(FLAGS.workdir, "curve.png")
  fig.savefig(out, dpi=110)
  print(out)


if __name__ == "__main__":
  common.run(main)
