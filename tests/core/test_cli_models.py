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


def test_the_command_list_imports_no_torch_and_says_what_each_command_says():
    """`autocnn --help` lists the commands from their modules' source: quick, and never out of step with them."""
    import importlib
    import subprocess
    import sys

    import autocnn.cli
    from autocnn.cli.lazyhelp import short_help

    code = ("import importlib, json, sys; from click.testing import CliRunner; import autocnn.cli as c; "
            "lazy = CliRunner().invoke(c.cli, ['--help']).output; assert 'torch' not in sys.modules, 'torch'; "
            "[importlib.import_module(m) for m in set(c.COMMANDS.values())]; "
            "print(json.dumps([lazy, CliRunner().invoke(c.cli, ['--help']).output]))")
    listed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    lazy, loaded = json.loads(listed.stdout)
    assert lazy == loaded  # the same listing as when every command is loaded
    for module in set(autocnn.cli.COMMANDS.values()):
        importlib.import_module(module)
    assert set(autocnn.cli.cli.commands) == set(autocnn.cli.COMMANDS)  # every command is in the lazy table
    for name, command in autocnn.cli.cli.commands.items():
        assert short_help(autocnn.cli.COMMANDS[name], name, 60) == command.get_short_help_str(60), name
        assert f"  {name} " in lazy
