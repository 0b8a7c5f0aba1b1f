"""The bottom layer of ctinit: everything about the Hugging Face Hub, importing nothing of ctinit above it (only
``ctinit.errors``, ``ctinit.tokens``, ``ctinit.version``), as transformers' ``utils/hub.py`` and timm's ``_hub.py``.

* :mod:`.names`: the file names ctinit reads and writes, Hub ids;
* :mod:`.errors`: huggingface_hub's exception types (and the network's) as one line;
* :mod:`.download`: a repo's files into the cache (safetensors only), offline from the cache;
* :mod:`.upload`: the one push path (links, pickles and secrets checked on a staged copy), :class:`PushToHubMixin`;
* :mod:`.cards`: license identifiers, the datasets behind task specs, the install line, and the one card engine
  (jinja2 templates in ``templates/``).
"""
from .cards import (ARXIV_URL, HUB_LICENSES, KNOWN_DATASETS, PLACEHOLDER, PLACEHOLDER_ORG, card_license,
                    check_license, dataset_id, install_line, render_card)
from .download import hub_snapshot
from .errors import hub_error, hub_offline, is_connection_error
from .names import (CARD_NAME, CONFIG_NAME, HUB_PREFIX, PICKLE_PATTERNS, PICKLE_SUFFIXES, PREPROCESSOR_NAME,
                    WEIGHTS_NAME, parse_hub_id)
from .upload import PushToHubMixin, check_links, check_no_secrets, check_push, push_folder

__all__ = ["ARXIV_URL", "CARD_NAME", "CONFIG_NAME", "HUB_LICENSES", "HUB_PREFIX", "KNOWN_DATASETS", "PICKLE_PATTERNS",
           "PICKLE_SUFFIXES", "PLACEHOLDER", "PLACEHOLDER_ORG", "PREPROCESSOR_NAME", "PushToHubMixin", "WEIGHTS_NAME",
           "card_license", "check_license", "check_links", "check_no_secrets", "check_push", "dataset_id",
           "hub_error", "hub_offline", "hub_snapshot", "install_line", "is_connection_error", "parse_hub_id",
           "push_folder", "render_card"]
