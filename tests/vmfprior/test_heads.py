"""Classifier heads: shapes, frozen weights, orthogonality, documented limits, use as a prior source."""

import pytest
import torch

from vmfprior import VMFPrior
from vmfprior.heads import HEAD_KINDS, make_head, sylvester_hadamard


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_every_head_maps_features_to_logits_and_gives_a_prior(kind):
    head = make_head(kind, in_features=16, num_classes=10)
    features = torch.randn(5, 16)
    assert head(features).shape == (5, 10)
    assert head.weight.shape == (10, 16)
    prior = VMFPrior.from_linear(head, concentration=5.0)
    assert prior.sample(torch.arange(10)).shape == (10, 16)
    trainable = [p for p in head.parameters() if p.requires_grad]
    if kind == "linear":
        assert len(trainable) == 2
    else:  # fixed heads: nothing to train, but the weight is saved with the model
        assert trainable == [] and "weight" in head.state_dict()


def test_fixed_heads_compute_their_documented_logits():
    features = torch.randn(3, 8)
    for kind in ("random", "orthogonal", "hadamard"):
        head = make_head(kind, 8, 4)
        torch.testing.assert_close(head(features), features @ head.weight.T)
    cosine = make_head("random-cosine", 8, 4, cosine_scale=10.0)
    expected = 10.0 * torch.nn.functional.normalize(features, dim=1) @ cosine.weight.T
    torch.testing.assert_close(cosine(features), expected)
    torch.testing.assert_close(make_head("identity", 8, 4)(features), features[:, :4])


def test_random_heads_are_seeded_without_touching_the_global_rng():
    state = torch.get_rng_state()
    first, second = make_head("random", 8, 4, seed=3), make_head("random", 8, 4, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first.weight, second.weight)
    assert not torch.equal(first.weight, make_head("random", 8, 4, seed=4).weight)
    torch.testing.assert_close(first.weight.norm(dim=1), torch.ones(4))


def test_orthogonal_and_hadamard_rows_are_orthonormal():
    rows = make_head("orthogonal", 12, 5).weight
    torch.testing.assert_close(rows @ rows.T, torch.eye(5), atol=1e-6, rtol=0)
    columns = make_head("orthogonal", 3, 5).weight  # more classes than features: a tight frame
    torch.testing.assert_close(columns.T @ columns, torch.eye(3), atol=1e-6, rtol=0)
    hadamard = make_head("hadamard", 16, 10).weight
    torch.testing.assert_close(hadamard @ hadamard.T, torch.eye(10), atol=1e-6, rtol=0)
    h8 = sylvester_hadamard(8)
    torch.testing.assert_close(h8 @ h8.T, 8 * torch.eye(8))


def test_documented_limits_raise_clear_errors():
    with pytest.raises(ValueError, match="Hadamard head needs num_classes <= in_features"):
        make_head("hadamard", 3, 10)
    with pytest.raises(ValueError, match="identity head needs in_features >= num_classes"):
        make_head("identity", 3, 10)
    with pytest.raises(ValueError, match="unknown head kind"):
        make_head("cosine", 3, 10)
    with pytest.raises(ValueError, match="in_features"):
        make_head("linear", 0, 10)
    with pytest.raises(ValueError, match="power of two"):
        sylvester_hadamard(6)
