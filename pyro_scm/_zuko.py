"""Import zuko without its global side effect: it switches torch's distribution validation off.

Imported first by ``pyro_scm/__init__.py``; later ``import zuko`` statements find it cached.
"""

from torch.distributions import Distribution

_validate_args = Distribution._validate_args
import zuko  # noqa: E402
import zuko.distributions  # noqa: E402, F401

Distribution.set_default_validate_args(_validate_args)
