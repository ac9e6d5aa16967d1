"""The CPU-scale Table 5's reading under its pre-stated criteria (gan.criteria), on records whose answers are
worked out by hand."""

from gan.criteria import paired_score, read_criteria


def _records(noise: str, gan_train: list[float], intra_fid: list[float], kappa: float | None = None) -> list[dict]:
    return [
        {"run": f"/runs/{noise}-s{seed}", "gan_train": a, "intra_fid": b, "concentration": kappa}
        for seed, (a, b) in enumerate(zip(gan_train, intra_fid))
    ]


def _table(vmf, gaussian, control=None, control_kappa=25.0) -> dict:
    """{noise: records}: each argument is (GAN-train per seed, intra-FID per seed)."""
    by_noise = {"vmf": _records("vmf", *vmf, kappa=25.0), "gaussian": _records("gaussian", *gaussian)}
    if control is not None:
        by_noise["vmf-orthogonal"] = _records("vmf-orthogonal", *control, kappa=control_kappa)
    return by_noise


GAUSSIAN = ([0.20, 0.22, 0.21], [9.0, 8.0, 8.5])


def test_paired_score_is_the_mean_and_se_of_the_per_seed_differences():
    by_noise = _table(([0.25, 0.32, 0.26], [9.0, 8.0, 8.5]), GAUSSIAN)
    mean, error, count = paired_score(by_noise, "vmf", "gaussian", "gan_train")
    # differences 0.05, 0.10, 0.05: mean 0.0667, sd 0.0289, SE 0.0167
    assert count == 3 and abs(mean - 0.2 / 3) < 1e-12 and abs(error - 0.0288675 / 3**0.5) < 1e-6


def test_seeds_one_side_lacks_are_left_out_of_the_pairs():
    by_noise = _table(([0.25, 0.32], [9.0, 8.0]), GAUSSIAN)
    assert paired_score(by_noise, "vmf", "gaussian", "gan_train")[2] == 2


def test_a_gain_the_orthogonal_control_also_has_is_class_clustering_alone():
    vmf = ([0.25, 0.32, 0.26], [9.0, 8.0, 8.5])  # GAN-train +0.067 (4 SE); intra-FID unchanged
    text = "\n".join(read_criteria(_table(vmf, GAUSSIAN, control=vmf), planned_seeds=3))
    assert "class-aware noise helps here (GAN-train); from class clustering alone" in text
    assert "provisional" not in text
    assert "vMF − Gaussian, GAN-train ↑: +0.067 ± 0.017 (SE, 3 seeds): better by more than 2 SE" in text
    assert "vMF − vMF, orthogonal head, GAN-train ↑: +0.000 ± 0.000 (SE, 3 seeds): within 2 SE" in text
    assert (
        "vMF, orthogonal head − Gaussian, GAN-train ↑: +0.067 ± 0.017 (SE, 3 seeds): better by more than 2 SE" in text
    )


def test_a_gain_the_control_does_not_share_and_vmf_does_not_hold_over_it_is_open():
    vmf = ([0.25, 0.32, 0.26], [9.0, 8.0, 8.5])  # GAN-train +0.05, +0.10, +0.05 over Gaussian (4 SE)
    control = ([0.22, 0.27, 0.24], [9.0, 8.0, 8.5])  # +0.02, +0.05, +0.03 over Gaussian (mean 0.033, SE 0.0088)
    text = "\n".join(read_criteria(_table(vmf, GAUSSIAN, control=control)))
    # vMF - control: +0.03, +0.05, +0.02 (mean 0.033, SE 0.0088, 3.8 SE): the geometry matters
    assert "the classifier's geometry matters" in text
    # a control that neither beats Gaussian (+0.02, -0.02, +0.03: mean 0.01, SE 0.0153) nor is beaten by vMF
    control = ([0.22, 0.20, 0.24], [9.0, 8.0, 8.5])
    # vMF - control: +0.03, +0.12, +0.02: mean 0.0567, SE 0.0318 (1.8 SE)
    text = "\n".join(read_criteria(_table(vmf, GAUSSIAN, control=control)))
    assert (
        "helps here (GAN-train); where the gain comes from is open (vMF does not beat the orthogonal control, "
        "nor the control Gaussian, by more than 2 SE)"
    ) in text
    assert "vMF − vMF, orthogonal head, GAN-train ↑: +0.057 ± 0.032 (SE, 3 seeds): within 2 SE" in text
    assert "vMF, orthogonal head − Gaussian, GAN-train ↑: +0.010 ± 0.015 (SE, 3 seeds): within 2 SE" in text


def test_a_gain_over_the_orthogonal_control_too_is_the_classifiers_geometry():
    vmf = ([0.25, 0.32, 0.26], [8.0, 7.0, 7.4])  # intra-FID lower by 1.0, 1.0, 1.1 too
    control = ([0.21, 0.22, 0.21], [9.0, 8.0, 8.5])
    text = "\n".join(read_criteria(_table(vmf, GAUSSIAN, control=control)))
    assert "helps here (GAN-train, intra-FID); the classifier's geometry matters" in text


def test_a_control_at_another_kappa_leaves_the_source_open():
    vmf = ([0.25, 0.32, 0.26], [9.0, 8.0, 8.5])
    text = "\n".join(read_criteria(_table(vmf, GAUSSIAN, control=vmf, control_kappa=10.0)))
    assert "the control ran at another κ, so where the gain comes from is open" in text


def test_worse_on_a_decisive_score_and_better_on_none_hurts():
    vmf = ([0.20, 0.22, 0.21], [10.0, 9.1, 9.5])  # intra-FID higher by 1.0, 1.1, 1.0
    assert "class-aware noise hurts here (intra-FID)" in "\n".join(read_criteria(_table(vmf, GAUSSIAN)))


def test_better_on_one_and_worse_on_the_other_is_mixed():
    vmf = ([0.25, 0.32, 0.26], [10.0, 9.1, 9.5])
    text = "\n".join(read_criteria(_table(vmf, GAUSSIAN)))
    assert "mixed: better on GAN-train, worse on intra-FID" in text


def test_exactly_two_standard_errors_is_not_enough():
    # intra-FID differences -3 and -1: mean -2, SE |-3 - -1| / 2 = 1, exactly 2 SE (all exact in binary);
    # -2.9 and -1: mean -1.95, SE 0.95, 2.05 SE
    for first, expected in ((6.0, "no difference shown"), (6.1, "helps here (intra-FID)")):
        vmf = ([0.20, 0.20], [first, 7.0])
        text = "\n".join(read_criteria(_table(vmf, ([0.20, 0.20], [9.0, 8.0]))))
        assert expected in text, text


def test_fewer_seeds_than_planned_is_provisional():
    vmf = ([0.25, 0.32, 0.26], [9.0, 8.0, 8.5])
    text = "\n".join(read_criteria(_table(vmf, GAUSSIAN, control=vmf), planned_seeds=5))
    assert "provisional, 3 of 5 paired seeds: class-aware noise helps here" in text


def test_one_seed_decides_nothing_and_a_table_without_both_noises_reads_nothing():
    text = "\n".join(read_criteria(_table(([0.9], [1.0]), ([0.1], [9.0]))))
    assert "no difference shown" in text and "nan" not in text
    # GAN-train 0.9 - 0.1, intra-FID 1.0 - 9.0 on one seed: large, and still no standard error to read them by
    assert "- vMF − Gaussian, GAN-train ↑: +0.800 (1 seed, no SE): decides nothing yet" in text
    assert "- vMF − Gaussian, intra-FID ↓: -8.00 (1 seed, no SE): decides nothing yet" in text
    assert read_criteria({"vmf": _records("vmf", [0.2], [9.0])}) == []
