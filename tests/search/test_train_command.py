"""`autocnn train` records one architecture exactly as a search trial would."""
import optuna

from autocnn.genotype import Genotype
from autocnn.search import records
from conftest import assert_user_error

RECORD_KEYS = {records.GENOTYPE, records.ARCH, records.ARCH_ID, records.PARAMS, records.FLOPS, records.LATENCY,
               records.VAL_CURVE, records.EPOCHS_RUN, records.WALL_TIME, records.TEST_METRIC, records.METRIC}


def test_train_records_a_one_trial_study(cli):
    result = cli("train", "--model", "lenet5", "--dataset", "digits", "--epochs", "3", "--resolution", "28",
                 "--study", "lenet")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="lenet", storage=cli.storage)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert RECORD_KEYS <= set(trial.user_attrs)
    assert trial.user_attrs[records.PARAMS] == 44_426  # LeNet-5 at 28x28x1, 10 classes
    assert len(trial.user_attrs[records.VAL_CURVE]) == 3
    assert trial.user_attrs[records.TEST_METRIC] > 0.5  # chance is 0.1
    assert Genotype.from_dict(trial.user_attrs[records.GENOTYPE]).num_classes == 10
    assert "lenet" in cli("studies").stdout


def test_train_unknown_model_is_a_user_error(cli):
    assert_user_error(cli("train", "--model", "resnet9000"), "unknown model 'resnet9000'")
