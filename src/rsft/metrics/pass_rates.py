"""``pass_rates.md`` and ``plots/pass_rates.png``: how many prompt groups of each pass rate every round drew.

A Lightning callback (``callbacks.pass_rates``) beside ``acceptance=pass_rate_band`` (group-level dynamic
sampling): the rule counts, for every group it judged, how many of its k samples the verifier marked correct
(``pass_rate_<c>_of_<k>``, also inside ``all_of`` as ``rule<i>_pass_rate_...``) and how many groups it kept. This
callback receives each round's figures from the data module (``on_round``) and writes, at the end of the fit, one
row per round (groups drawn, kept, and the count at every pass rate) as Markdown and CSV, and a stacked bar plot;
with a W&B logger also a W&B table. The figures travel in the checkpoint, so a resumed run writes the whole table.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import matplotlib
import pytorch_lightning as pl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first: reports are written headless

HIST = re.compile(r"^(?:rule\d+_)?pass_rate_(\d+)_of_(\d+)$")
COUNTS = re.compile(r"^(?:rule\d+_)?groups_(seen|kept)$")


def round_histogram(stats: dict[str, Any]) -> tuple[dict[tuple[int, int], int], dict[str, int]]:
    """(correct, k) → groups, and {"seen", "kept"}, from one round's figures."""
    hist: dict[tuple[int, int], int] = {}
    counts: dict[str, int] = {}
    for key, value in stats.items():
        if m := HIST.match(key):
            hist[(int(m[1]), int(m[2]))] = hist.get((int(m[1]), int(m[2])), 0) + int(value)
        elif m := COUNTS.match(key):
            counts[m[1]] = int(value)
    return hist, counts


class PassRateReport(pl.Callback):
    """Collects every round's pass-rate histogram; writes ``pass_rates.md``, ``.csv`` and ``plots/pass_rates.png``."""

    def __init__(self) -> None:
        self.rounds: dict[int, dict[str, Any]] = {}  # epoch → {"hist": {(c, k): n}, "seen": n, "kept": n}

    def on_round(self, epoch: int, stats: dict[str, float], accepted: Any) -> None:
        hist, counts = round_histogram(stats)
        if hist:
            self.rounds[int(epoch)] = {"hist": hist, **counts}

    def state_dict(self) -> dict[str, Any]:
        return {
            "rounds": {e: {**r, "hist": [[c, k, n] for (c, k), n in r["hist"].items()]} for e, r in self.rounds.items()}
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rounds = {
            int(e): {**r, "hist": {(int(c), int(k)): int(n) for c, k, n in r["hist"]}}
            for e, r in state_dict.get("rounds", {}).items()
        }

    # -- the table ------------------------------------------------------------------------------------
    def columns(self) -> list[tuple[int, int]]:
        return sorted({ck for r in self.rounds.values() for ck in r["hist"]}, key=lambda ck: (ck[1], ck[0]))

    def header(self) -> list[str]:
        return ["round", "groups drawn", "groups kept", *(f"{c}/{k} correct" for c, k in self.columns())]

    def rows(self) -> list[list[Any]]:
        return [
            [
                e,
                r.get("seen", sum(r["hist"].values())),
                r.get("kept", ""),
                *(r["hist"].get(ck, 0) for ck in self.columns()),
            ]
            for e, r in sorted(self.rounds.items())
        ]

    def markdown(self) -> str:
        lines = [
            "# Pass rates per round",
            "",
            "Prompt groups drawn in each round by their number of correct samples (of k), and how many the pass-rate "
            "band kept.",
            "",
            "| " + " | ".join(self.header()) + " |",
            "|" + "---|" * len(self.header()),
        ]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in self.rows()]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.header())
        writer.writerows(self.rows())
        return out.getvalue()

    def plot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        epochs = sorted(self.rounds)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        bottom = [0] * len(epochs)
        cmap = plt.get_cmap("viridis")
        columns = self.columns()
        for i, (c, k) in enumerate(columns):
            heights = [self.rounds[e]["hist"].get((c, k), 0) for e in epochs]
            ax.bar(epochs, heights, bottom=bottom, color=cmap(i / max(len(columns) - 1, 1)), label=f"{c}/{k}")
            bottom = [b + h for b, h in zip(bottom, heights)]
        kept = [self.rounds[e].get("kept") for e in epochs]
        if all(v is not None for v in kept):
            ax.plot(epochs, kept, "k.-", label="kept")
        ax.set_xlabel("round (epoch)")
        ax.set_ylabel("prompt groups")
        ax.set_xticks(epochs)
        ax.legend(title="correct", fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def write(self, directory: Path) -> tuple[Path, Path, Path]:
        md, table = directory / "pass_rates.md", directory / "pass_rates.csv"
        md.write_text(self.markdown())
        table.write_text(self.csv())
        return md, table, self.plot(directory / "plots" / "pass_rates.png")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if not trainer.is_global_zero or not self.rounds:
            return
        _, _, png = self.write(Path(trainer.default_root_dir))
        for lg in trainer.loggers:
            if hasattr(lg, "log_image") and hasattr(lg, "log_table"):  # W&B
                lg.log_image(key="pass_rates/figure", images=[str(png)])
                lg.log_table(key="pass_rates/rounds", columns=self.header(), data=self.rows())
