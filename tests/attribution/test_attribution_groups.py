"""Target layer groups and regexes over parameter names."""

import pytest

from fixtures_model import tiny_dit
from songtrace.attribution import is_regex, target_params
from songtrace.errors import SongtraceError


def test_named_groups_nest_and_keep_model_order():
    model = tiny_dit()
    order = [n for n, _ in model.named_parameters()]
    to_kv, cross, self_attn, everything = (target_params(model, g) for g in ("to_kv", "cross_attn", "self_attn", "all"))
    assert to_kv and set(to_kv) < set(cross) < set(everything)
    assert set(self_attn) < set(everything) and not set(self_attn) & set(cross)
    assert all(n.endswith("cross_attn.to_kv.weight") for n in to_kv)
    assert everything == [n for n in order if n in set(everything)]


def test_regex_groups():
    model = tiny_dit()
    assert target_params(model, r"re:layers\.0\.") == [n for n, _ in model.named_parameters() if n.startswith("layers.0.")]
    assert target_params(model, "layers.1.ff") == [n for n, _ in model.named_parameters() if n.startswith("layers.1.ff")]
    assert is_regex("re:anything") and is_regex("a.b") and not is_regex("to_kv")


@pytest.mark.parametrize(
    ("spec", "message"),
    [("attention", "unknown layer group 'attention'; valid groups: all, cross_attn, self_attn, to_kv"),
     ("re:nothing_matches_this", "matches no parameter"),
     ("re:(unclosed", "bad parameter regex")],
)
def test_bad_groups_list_the_valid_ones(spec, message):
    with pytest.raises(SongtraceError, match="valid groups") as err:
        target_params(tiny_dit(), spec)
    assert message in str(err.value)
