"""Search spaces: YAML files that map an Optuna trial to a Genotype, define-by-run.

>>> import optuna
>>> from autocnn.spaces import load_space
>>> space = load_space("resnet_attention")            # a built-in name or a path to a .yaml file
>>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
>>> genotype = space.sample(study.ask(), num_classes=10, in_chans=1)
>>> study.enqueue_trial(space.fixed_params("resnet18"))   # warm start from a preset

The file format is documented in `search_spaces/README.md`. Any failure to read a file, and any
sample the file cannot turn into a valid genotype, raises `SpaceError` whose one-line message is
`FILE:LINE: key.path: problem; fix`.
"""
from autocnn.spaces.dimensions import Categorical, Dimension, Float, Int
from autocnn.spaces.errors import SpaceError
from autocnn.spaces.expr import FUNCTIONS, Expr, ExprError
from autocnn.spaces.generators import GENERATORS
from autocnn.spaces.compiler import builtin_dir, builtin_spaces, load_space, load_space_text
from autocnn.spaces.space import SearchSpace

__all__ = [
    "Categorical", "Dimension", "Expr", "ExprError", "FUNCTIONS", "Float", "GENERATORS", "Int",
    "SearchSpace", "SpaceError", "builtin_dir", "builtin_spaces", "load_space", "load_space_text",
]
