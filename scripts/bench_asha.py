"""Benchmark: ASHA vs FIFO on the Ray backend, same trials — epochs consumed and best accuracy.

Two searches of the same small space on digits run one after the other on a local Ray started for
each (`run_search` on a `RayBackend`, 1 CPU per trial, so as many trials at once as the machine has cores). Both
use the random sampler with the same seed, so trial k is the same architecture, trained with the
same seed, in both: the only difference is the scheduler. FIFO trains every trial for the full
budget; ASHA (grace 1 epoch, reduction factor 3: rungs at 1, 3, 9 epochs) stops the trials below the
top third of each rung.

Figures: epochs consumed (sum of `epochs_run` over the study's trials), the best validation accuracy
of a fully trained trial and its test accuracy. Goal: ASHA's best within 0.5 point of FIFO's at
<= 40 % of FIFO's epochs.

    python scripts/bench_asha.py --quick     # 18 trials x 9 epochs each way
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import benchlib

EPOCH_GOAL, ACCURACY_GOAL = benchlib.PRUNING_EPOCH_GOAL, benchlib.PRUNING_ACCURACY_GOAL
SPACE = benchlib.small_conv_space("bench_asha")


def run(scheduler: str, folder: Path, trials: int, epochs: int) -> dict:
    from optuna.trial import TrialState

    from autocnn.search import records
    from autocnn.search.config import SearchConfig
    from autocnn.search.driver import run_search
    from autocnn.search.ray import RayBackend

    config = SearchConfig(space=str(folder / "space.yaml"), dataset="digits", trials=trials, epochs=epochs,
                          sampler="random", pruner="none", seed=0, study=scheduler,
                          storage=f"sqlite:///{folder / 'studies.db'}")
    started = time.perf_counter()
    study = run_search(config, backend=RayBackend(scheduler=scheduler, cpus_per_trial=1))
    seconds = time.perf_counter() - started
    trials_ = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
               if records.REJECTED not in t.user_attrs]
    complete = [t for t in trials_ if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.values[0])
    return {"scheduler": scheduler, "trials": len(trials_), "complete": len(complete),
            "pruned": len(trials_) - len(complete), "epochs": sum(t.user_attrs[records.EPOCHS_RUN] for t in trials_),
            "best_val": best.values[0], "best_test": best.user_attrs.get(records.TEST_METRIC),
            "best_trial": best.number, "best_arch": best.user_attrs[records.ARCH], "seconds": seconds}


def main() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args = benchlib.parser(__doc__.splitlines()[0]).parse_args()
    trials, epochs = benchlib.by_mode(args.mode, smoke=(4, 3), quick=(18, 9), full=(48, 9))
    info, started = benchlib.machine(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "space.yaml").write_text(SPACE)
        fifo = run("fifo", folder, trials, epochs)
        asha = run("asha", folder, trials, epochs)

    share = asha["epochs"] / fifo["epochs"]
    gap = fifo["best_val"] - asha["best_val"]
    met = share <= EPOCH_GOAL and gap <= ACCURACY_GOAL
    rows = [[r["scheduler"], r["trials"], r["complete"], r["pruned"], r["epochs"], f"{r['best_val']:.4f}",
             f"{r['best_test']:.4f}", r["best_trial"], f"{r['seconds']:.0f}"] for r in (fifo, asha)]
    body = benchlib.header(
        "ASHA vs FIFO on the Ray backend (digits)", info, started,
        note=f"{trials} trials x {epochs} epochs each way, random sampler seed 0 (trial k is the same "
             f"architecture in both), local Ray, 1 CPU per trial; space: 5 dimensions over small conv nets at 16 px "
             f"(in the script); ASHA grace 1, reduction 3")
    body += "\n" + benchlib.table(["scheduler", "trials", "complete", "pruned", "epochs consumed", "best val acc",
                                   "its test acc", "best trial", "wall s"], rows) + "\n\n"
    body += (f"ASHA used **{share:.0%}** of FIFO's epochs ({asha['epochs']} / {fifo['epochs']}); best validation "
             f"accuracy {asha['best_val']:.4f} vs {fifo['best_val']:.4f} ({-gap * 100:+.2f} points). Goal: within "
             f"{ACCURACY_GOAL * 100:.1f} point at <= {EPOCH_GOAL:.0%} of the epochs: {benchlib.verdict(met)}.\n\n"
             f"Best architectures: FIFO trial {fifo['best_trial']} `{fifo['best_arch']}`; "
             f"ASHA trial {asha['best_trial']} `{asha['best_arch']}`.\n\n"
             "Epoch counts and accuracies are seeded and do not depend on the machine; wall times do (CPU only, "
             "shared with other jobs: see the load averages above).\n")
    if args.mode == "smoke":
        body += "\n(smoke run: the numbers mean nothing)\n"
    path = benchlib.write_section("asha", body, args.out)
    print(f"wrote section 'asha' of {path}")
    benchlib.emit([
        {"benchmark": "asha", "figure": "ASHA epochs / FIFO epochs", "value": f"{share:.0%}",
         "goal": f"<= {EPOCH_GOAL:.0%}", "met": share <= EPOCH_GOAL},
        {"benchmark": "asha", "figure": "FIFO best - ASHA best (val accuracy, points)", "value": f"{gap * 100:.2f}",
         "goal": f"<= {ACCURACY_GOAL * 100:.1f}", "met": gap <= ACCURACY_GOAL},
    ], args.json)


if __name__ == "__main__":
    main()
