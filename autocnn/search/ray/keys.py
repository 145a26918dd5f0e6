"""Names shared by the Ray driver and its workers: result keys, trial/study attributes, the config key."""

GPU_IDS = "gpu_ids"              # trial user attr: the GPU ids Ray assigned to the trial's worker
HPARAMS = "hparams"              # trial user attr (PBT only): [{from_epoch, lr, weight_decay[, from_trial]}, ...] as trained
EXPERIMENT_ATTR = "autocnn.ray_experiment"  # study user attr: path of the Tune experiment in flight
RUNS_ATTR = "autocnn.ray_runs"   # study user attr: Tune experiments started so far
FAULT_ENV = "AUTOCNN_RAY_FAULT"  # test hook "TRIAL:EPOCH:MARKER": that trial's worker dies once after that epoch

SPEC = "autocnn"                 # key of the per-trial constants in a Tune trial's config
TIME_MODEL = "time_model"        # SPEC key: the training-time model as the driver fitted it (`timing.TimeModel`)
COSTS = "costs"                  # SPEC key: params, FLOPs, layers and activations the driver counted
RIVAL_EPOCHS = "rival_epochs"    # SPEC key: the longest training of a complete trial when the driver priced it
BEST_S = "best_s"                # SPEC key: the seconds the best model trains in when the driver priced it
VAL, EPOCH, FINAL = "val_metric", "epoch", "autocnn_final"
ATTRS, OBJECTIVES, OPTUNA_ID = "autocnn_attrs", "autocnn_objectives", "autocnn_trial_id"
CHECKPOINT_DIR = "checkpoint_dir_name"  # Tune's result key naming the checkpoint reported with it
TUNABLE = ("lr", "weight_decay")  # what PBT may mutate
DEFAULT_WEIGHT_DECAY = 5e-4
MAX_FAILURES = 3                 # retries of a trial whose worker died, each from its last checkpoint


def trial_dirname(trial_id: str) -> str:
    """The folder of Tune trial `trial_id` inside its experiment (Tune's `trial_dirname_creator`)."""
    return f"trial-{trial_id}"


def trial_dirname_of(trial) -> str:
    """Tune's `trial_dirname_creator` (a module-level function: Tune pickles it with the experiment)."""
    return trial_dirname(trial.trial_id)
