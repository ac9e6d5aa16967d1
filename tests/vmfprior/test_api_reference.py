"""The generated API reference (docs/api.md): pdoc builds it, and every public name of the library has a docstring.

A public function, class, method, property or attribute added without a docstring fails here, so the reference
never shows an empty entry.
"""

import pytest

pdoc = pytest.importorskip("pdoc")  # in the dev extra, so CI runs this
from pdoc import doc, render  # noqa: E402

import vmfprior  # noqa: E402
import vmfprior.heads  # noqa: E402
import vmfprior.svae  # noqa: E402

REFERENCE_MODULES = ("vmfprior", "vmfprior.heads", "vmfprior.svae")  # as in docs/api.md's command


def _undocumented(namespace) -> list[str]:
    missing = []
    for name, member in namespace.members.items():
        if name.startswith("_") or not member.taken_from[0].startswith("vmfprior"):
            continue  # private, or inherited from torch (documented there)
        if not (member.docstring or "").strip():
            missing.append(member.qualname)
        if isinstance(member, doc.Class):
            missing += _undocumented(member)
    return missing


@pytest.mark.parametrize("module", [vmfprior, vmfprior.heads, vmfprior.svae], ids=lambda m: m.__name__)
def test_every_public_name_has_a_docstring(module):
    assert _undocumented(doc.Module(module)) == []


def test_the_reference_builds_with_an_entry_for_every_exported_name(tmp_path):
    render.configure(docformat="google")
    pdoc.pdoc(*REFERENCE_MODULES, output_directory=tmp_path)
    page = (tmp_path / "vmfprior.html").read_text()
    for name in vmfprior.__all__:
        if name != "__version__":
            assert f'id="{name}"' in page, name
    for method in ("rsample", "log_prob", "entropy", "class_affinity"):
        assert f'.{method}"' in page or f'id="VMFPrior.{method}"' in page, method
    assert (tmp_path / "vmfprior" / "heads.html").is_file() and (tmp_path / "vmfprior" / "svae.html").is_file()
