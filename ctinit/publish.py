"""The old name of publishing: the push path is :mod:`ctinit.hubio.upload`, what a card needs (license identifiers,
the install line, the paper link, the task-to-dataset mapping) :mod:`ctinit.hubio.cards`. Kept for one release so
that ``from ctinit.publish import push_folder`` works; import from :mod:`ctinit.hubio` instead."""
from .hubio.cards import (ARXIV_ID, ARXIV_URL, GLYPH_SUITE_DATA, HUB_LICENSES, KNOWN_DATASETS, PLACEHOLDER,
                          PLACEHOLDER_ORG, card_license, check_license, dataset_id, install_line)
from .hubio.upload import IGNORE_PATTERNS, check_links, check_no_secrets, check_push, not_uploaded, push_folder
from .tokens import get_token, scrub

__all__ = [
    "ARXIV_ID", "ARXIV_URL", "GLYPH_SUITE_DATA", "HUB_LICENSES", "IGNORE_PATTERNS", "KNOWN_DATASETS", "PLACEHOLDER",
    "PLACEHOLDER_ORG", "card_license", "check_license", "check_links", "check_no_secrets", "check_push", "dataset_id",
    "get_token", "install_line", "not_uploaded", "push_folder", "scrub",
]
