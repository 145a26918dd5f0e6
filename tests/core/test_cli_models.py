"""`autocnn models` and `autocnn show` through the real console script."""
import json

from autocnn import list_models
from conftest import assert_user_error, run_cli


def test_models_json_lists_every_preset_with_costs():
    result = run_cli("models", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == set(list_models())
    assert rows["resnet50"]["params"] == 25_557_032
    assert 8.0e9 < rows["resnet50"]["flops"] < 8.4e9  # 4.1 GMACs = 8.2 GFLOPs at 224 px
    assert rows["efficientnet_b7"]["resolution"] == 600


def test_show_prints_stages_and_layers(tmp_path):
    result = run_cli("show", "efficientnet_b0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("mbconv") >= 7 and "1280x7x7" in result.stdout
    assert "5,288,548" in result.stdout
    genotype_file = tmp_path / "net.yaml"
    from autocnn.presets import get_preset

    genotype_file.write_text(get_preset("lenet5").to_yaml())
    result = run_cli("show", str(genotype_file))
    assert result.returncode == 0 and "44,426" in result.stdout


def test_show_unknown_model_is_one_line_error():
    assert_user_error(run_cli("show", "resnet9000"), "unknown model 'resnet9000'")
