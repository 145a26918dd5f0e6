"""Failing trials fail alone: the trial is marked FAIL with the reason in its record (`fail_reason`,
"Type: first line of the message") and the search goes on to its budget with the other candidates.

Three real causes, each in a small space where only some candidates hit it: a loss that becomes NaN
(no normalisation at a huge learning rate), an exception inside a block's forward (unpadded 5x5
convolutions on a 12-pixel input: tests/search/test_backend_conformance.py, on both backends), and host
memory exhaustion (a head too wide for the address-space limit the search process runs under, set with
setrlimit in the child before it starts).
"""
from __future__ import annotations

import resource
import subprocess
import sys

from optuna.trial import TrialState

from conftest import autocnn_exe, cli_env, load_trials, run_cli, sqlite_url

HEADER = """\
base_resolution: 12
genotype:
  preset: lenet5
  stem: []
  stages:
    - {block: conv, out_chs: "${width}", kernel: KERNEL, padding: PADDING}
    - {block: maxpool, kernel: 2, stride: 2}
    - {block: conv, out_chs: "${width * 2}", kernel: KERNEL, padding: PADDING}
  head: {pool: avg, hidden: HIDDEN}
  act: relu
  norm: NORM
"""


def _space(tmp_path, name: str, params: str, *, kernel="3", padding="1", hidden="[]", norm="batch") -> str:
    text = (HEADER.replace("KERNEL", kernel).replace("PADDING", padding).replace("HIDDEN", hidden)
            .replace("NORM", norm))
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ndescription: reliability test space\nparams:\n{params}{text}")
    return str(path)


def _search(tmp_path, space: str, *extra: str, preexec_fn=None, env=None) -> subprocess.CompletedProcess:
    args = ["search", "--space", space, "--dataset", "digits", "--limit", "200", "--epochs", "2",
            "--resolution", "12", "--pruner", "none", "--sampler", "random", "--trials", "3", "--study", "f",
            "--storage", sqlite_url(tmp_path / "f.db"), *extra]
    if preexec_fn is None:
        return run_cli(*args, cwd=tmp_path, timeout=400)
    return subprocess.run([autocnn_exe(), *args], cwd=tmp_path, env=env or cli_env(), capture_output=True, text=True,
                          timeout=400, preexec_fn=preexec_fn)


def _outcome(tmp_path, result) -> tuple[list, list]:
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load_trials(sqlite_url(tmp_path / "f.db"), "f")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(complete) == 3, [(t.number, t.state.name, t.params) for t in trials]  # the budget, regardless
    assert failed, "this space and seed sample candidates that fail; none did"
    for t in failed:
        assert f"trial {t.number:>3} FAIL" in result.stderr  # the progress line shows the failure too
    return complete, failed


def test_diverging_candidates_fail_and_the_search_continues(tmp_path):
    space = _space(tmp_path, "diverge", "  width: {int: [4, 16], step: 4}\n  norm: {choices: [batch, none]}\n",
                   norm='"${norm}"')
    complete, failed = _outcome(tmp_path, _search(tmp_path, space, "--lr", "100000"))
    for t in failed:  # unnormalised activations overflow; BatchNorm keeps the others finite
        assert t.params["norm"] == "none"
        assert t.user_attrs["fail_reason"].startswith("DivergedError: training loss became nan"), t.user_attrs
    assert all(t.params["norm"] == "batch" for t in complete)


def _import_vm_peak() -> int:
    """Bytes of address space a search process holds once torch and autocnn are imported."""
    code = ("import autocnn.cli.search, autocnn.search.engine, torch; torch.zeros(1)\n"
            "print(next(l for l in open('/proc/self/status') if l.startswith('VmPeak')).split()[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True)
    return int(out.stdout.strip()) * 1024


def test_out_of_memory_fails_its_trial_only(tmp_path):
    """The search runs with RLIMIT_AS at its import footprint + 1.5 GB: small candidates train in
    ~0.5 GB more, an 8M-unit hidden layer needs several GB and its allocation fails."""
    limit = _import_vm_peak() + 1536 * 2**20

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    space = _space(tmp_path, "wide_head", "  width: {int: [4, 8], step: 4}\n  hidden: {choices: [16, 8388608]}\n",
                   hidden='["${hidden}"]')
    env = cli_env(MALLOC_ARENA_MAX="2")  # glibc reserves 64 MB of address space per thread arena otherwise
    complete, failed = _outcome(tmp_path, _search(tmp_path, space, preexec_fn=limit_memory, env=env))
    for t in failed:
        assert t.params["hidden"] == 8388608
        reason = t.user_attrs["fail_reason"]
        assert reason.startswith(("RuntimeError: ", "MemoryError")) and "allocate" in reason, reason
    assert all(t.params["hidden"] == 16 for t in complete)


def test_a_search_whose_every_trial_fails_ends_saying_why(tmp_path):
    """`train` of a genotype whose avg head hides that 12 px shrink to nothing under its 5x5 convs: every
    trial fails the same way, and the line that ends the run carries the last failure's reason."""
    model = tmp_path / "lenet_avg.json"
    model.write_text('{"stages": [{"block": "conv", "out_chs": 6, "kernel": 5, "padding": 0}, {"block": "maxpool", '
                     '"stride": 2, "kernel": 2}, {"block": "conv", "out_chs": 16, "kernel": 5, "padding": 0}], '
                     '"head": {"pool": "avg"}, "resolution": 12, "in_chans": 1, "num_classes": 10}')
    result = run_cli("train", "--model", str(model), "--dataset", "digits", "--limit", "100", "--epochs", "1",
                     "--storage", sqlite_url(tmp_path / "s.db"), cwd=tmp_path, env=cli_env())
    assert result.returncode == 2, result.stderr[-2000:]
    # each failed trial is one progress line with its reason, not Optuna's warning with parameters and traceback
    assert "Traceback" not in result.stderr and "failed with parameters" not in result.stderr, result.stderr[:3000]
    assert "FAIL " in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: every recent trial of study") and "(the last: RuntimeError: " in last, last
    assert "size" in last, last  # torch's own words on the too-small input
