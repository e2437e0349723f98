"""Every method is one sub-package; importing it registers the method in ``visec.registry.METHODS``."""

from visec.methods import classifier  # noqa: F401
from visec.methods import ancra  # noqa: F401
from visec.methods import hfc_mffd  # noqa: F401
from visec.methods import deepfidelity  # noqa: F401
from visec.methods import acmf  # noqa: F401
from visec.methods import gcscoop  # noqa: F401
from visec.methods import fedforgery  # noqa: F401
from visec.methods import sbka  # noqa: F401
from visec.methods import mmnet  # noqa: F401
from visec.methods import adv_diffusion  # noqa: F401
