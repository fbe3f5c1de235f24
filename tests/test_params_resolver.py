"""DerivedResolver: chains, store-wins, cycles, depth, missing keys and context, isolation, the
helpers, and the reconstruction transforms against their formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crrxr.params import (
    CycleError,
    DepthError,
    DerivedResolver,
    MissingContextError,
    MissingDependencyError,
    ParameterStore,
    ParamField,
    ParamSpec,
    ParamValidationError,
    ResolveError,
    TransformRegistrationError,
    check_consistency,
    pack,
    reconstruction_resolver,
    reconstruction_spec,
    refresh_derived,
    resolvable_derived,
    strip_derived,
    unpack,
)


def chain_spec() -> ParamSpec:
    F = ParamField
    return ParamSpec(
        [
            F("p.a", "", default=2.0),
            F("p.b", "", default=3.0),
            F("p.n", "", dtype="int64", default=4),
            F("d.sum", "", kind="derived", depends_on=("p.a", "p.b")),
            F("d.twice", "", kind="derived", depends_on=("d.sum",)),
            F("d.scaled", "", kind="derived", shape=(-1,), depends_on=("d.twice",)),
        ],
        "chain",
        "test.chain",
    )


def chain_resolver(calls: list[str] | None = None) -> DerivedResolver:
    r = DerivedResolver("test.chain")
    log = calls if calls is not None else []

    @r.register_transform("d.sum", depends_on=("p.a", "p.b"))
    def _sum(p, ctx):
        log.append("d.sum")
        return p["p.a"] + p["p.b"]

    @r.register_transform("d.twice", depends_on=("d.sum",))
    def _twice(p, ctx):
        log.append("d.twice")
        return 2.0 * p["d.sum"]

    @r.register_transform("d.scaled", depends_on=("d.twice",), context=("x",))
    def _scaled(p, ctx):
        log.append("d.scaled")
        return p["d.twice"] * np.asarray(ctx["x"], dtype=float)

    return r


def test_recursive_chain_resolves_each_transform_once():
    calls: list[str] = []
    r = chain_resolver(calls)
    store = ParameterStore.from_spec_defaults(chain_spec())
    out = r.resolve_many(store, ["d.scaled", "d.twice", "d.sum"], {"x": np.array([1.0, 0.5])})
    assert out["d.sum"] == 5.0 and out["d.twice"] == 10.0
    assert out["d.scaled"].tolist() == [10.0, 5.0]
    assert calls == ["d.sum", "d.twice", "d.scaled"]
    assert r.resolve(store, "p.a") == 2.0  # primitives come from the store


def test_store_wins_over_transforms():
    calls: list[str] = []
    r = chain_resolver(calls)
    store = ParameterStore.from_spec_defaults(chain_spec()).replace({"d.sum": 100.0})
    assert r.resolve(store, "d.twice") == 200.0
    assert calls == ["d.twice"]  # d.sum was not recomputed
    assert r.resolve(store.replace({"d.twice": -1.0}), "d.twice") == -1.0


def test_cycle_error_prints_the_chain_and_system_id():
    r = DerivedResolver("test.cycle")
    r.register_transform("c.a", depends_on=("c.b",))(lambda p, c: p["c.b"])
    r.register_transform("c.b", depends_on=("c.c",))(lambda p, c: p["c.c"])
    r.register_transform("c.c", depends_on=("c.a",))(lambda p, c: p["c.a"])
    with pytest.raises(
        CycleError, match=r"\[test.cycle\] dependency cycle: c.a -> c.b -> c.c -> c.a"
    ):
        r.resolve(ParameterStore(), "c.a")
    # a value in the store breaks the cycle
    assert r.resolve(ParameterStore({"c.b": 1.5}), "c.a") == 1.5


def test_depth_error():
    r = DerivedResolver("test.deep", max_depth=5)
    for i in range(10):
        r.register_transform(f"k.v{i}", depends_on=(f"k.v{i + 1}",))(
            lambda p, c, i=i: p[f"k.v{i + 1}"] + 1
        )
    store = ParameterStore({"k.v10": 0.0})
    with pytest.raises(
        DepthError, match=r"\[test.deep\] dependency chain deeper than 5: k.v0 -> k.v1"
    ):
        r.resolve(store, "k.v0")
    assert r.resolve(store, "k.v6") == 4.0  # 4 levels deep: fine


def test_missing_dependency_and_context():
    r = chain_resolver()
    store = ParameterStore({"p.a": 1.0})
    with pytest.raises(
        MissingDependencyError,
        match=r"\[test.chain\] 'p.b' has no value .* \(needed by d.twice -> d.sum\)",
    ):
        r.resolve(store, "d.twice")
    with pytest.raises(MissingContextError, match=r"\[test.chain\] 'd.scaled' needs context 'x'"):
        r.resolve(ParameterStore.from_spec_defaults(chain_spec()), "d.scaled")
    with pytest.raises(KeyError):
        r.resolve(store, "nothing.here")


def test_resolvers_are_isolated():
    r1, r2 = DerivedResolver("test.same"), DerivedResolver("test.same")
    r1.register_transform("s.x")(lambda p, c: 1.0)
    assert "s.x" in r1 and "s.x" not in r2
    with pytest.raises(MissingDependencyError, match=r"\[test.same\] 's.x'"):
        r2.resolve(ParameterStore(), "s.x")
    r2.register_transform("s.x")(lambda p, c: 2.0)
    assert r1.resolve(ParameterStore(), "s.x") == 1.0 and r2.resolve(ParameterStore(), "s.x") == 2.0
    # two factory calls give independent resolvers
    a, b = reconstruction_resolver(), reconstruction_resolver()
    assert a is not b and a.transforms["grid.nside"] is not b.transforms["grid.nside"]
    a.register_transform("extra.key")(lambda p, c: 0.0)
    assert "extra.key" not in b


def test_register_twice_is_an_error():
    r = chain_resolver()
    with pytest.raises(TransformRegistrationError, match="already registered"):
        r.register_transform("d.sum")(lambda p, c: 0.0)


def test_context_is_read_only():
    r = DerivedResolver("test.ctx")
    seen = {}

    @r.register_transform("c.out", context=("wave",))
    def _mutate(p, ctx):
        seen["writeable"] = ctx["wave"].flags.writeable
        with pytest.raises(TypeError):
            ctx["wave"] = None  # the mapping itself is read-only
        ctx["wave"][0] = -1.0  # raises ValueError: assignment destination is read-only
        return 0.0

    wave = np.array([5000.0, 6000.0])
    with pytest.raises(ResolveError, match="read-only"):
        r.resolve(ParameterStore(), "c.out", {"wave": wave})
    assert seen["writeable"] is False and wave[0] == 5000.0 and wave.flags.writeable


def test_check_spec_system_id():
    r = chain_resolver()
    other = ParamSpec(chain_spec().fields, "chain", "other.system")
    with pytest.raises(ResolveError, match="system id 'other.system'.*serves 'test.chain'"):
        refresh_derived(ParameterStore(), other, r)


def test_refresh_strip_and_consistency():
    spec, r = chain_spec(), chain_resolver()
    base = ParameterStore.from_spec_defaults(spec)
    full = refresh_derived(base, spec, r, {"x": np.array([1.0])})
    assert full["d.twice"] == 10.0 and full["d.scaled"].tolist() == [10.0]
    full.validate_against(spec, allow_derived=True)
    check_consistency(full, spec, r, {"x": np.array([1.0])})
    stale = full.replace({"p.a": 7.0})  # primitive changed, derived not refreshed
    with pytest.raises(ResolveError, match=r"d.sum: stored 5.0, recomputed 10.0"):
        check_consistency(stale, spec, r, {"x": np.array([1.0])})
    fresh = refresh_derived(stale, spec, r, {"x": np.array([1.0])})
    assert fresh["d.sum"] == 10.0 and fresh["d.twice"] == 20.0
    assert strip_derived(fresh, spec) == base.replace({"p.a": 7.0})
    # a subset of derived keys needs no context
    part = refresh_derived(base, spec, r, keys=["d.twice"])
    assert "d.twice" in part and "d.scaled" not in part and "d.sum" not in part


def test_pack_unpack_round_trip():
    spec = chain_spec()
    store = ParameterStore.from_spec_defaults(spec)
    v = pack(store, spec)
    assert v.dtype == np.float64 and v.tolist() == [2.0, 3.0]  # float primitives in spec order
    back = unpack(v * 2, store, spec)
    assert back["p.a"] == 4.0 and back["p.b"] == 6.0 and back["p.n"] == 4
    v2 = pack(store, spec, keys=["p.n", "p.a"])
    assert v2.tolist() == [2.0, 4.0]  # spec order, not the order given
    assert unpack(np.array([1.0, 5.0]), store, spec, keys=["p.n", "p.a"])["p.n"] == 5
    with pytest.raises(ParamValidationError, match="int64 parameter cannot take"):
        unpack(np.array([1.0, 5.5]), store, spec, keys=["p.n", "p.a"])
    with pytest.raises(ValueError, match="vector has 3 values"):
        unpack(np.zeros(3), store, spec)

    rec = reconstruction_spec()
    rstore = ParameterStore.from_spec_defaults(rec)
    rv = pack(rstore, rec)
    assert (
        rv.size
        == len([f for f in rec if not f.is_derived and f.dtype == "float64" and f.is_scalar]) + 4
    )
    assert unpack(rv, rstore, rec) == rstore
    with pytest.raises(ValueError, match="crr.lambda"):
        unpack(np.where(np.arange(rv.size) == 3, -1.0, rv), rstore, rec)  # crr.lambda < 0
    with pytest.raises(ValueError, match="dtype str cannot be packed"):
        pack(rstore, rec, keys=["method"])


# -- the reconstruction transforms ---------------------------------------------------------------
def test_reconstruction_resolver_matches_its_spec():
    spec, r = reconstruction_spec(), reconstruction_resolver()
    r.check_spec(spec)
    assert set(r.transforms) == set(spec.derived_keys())
    for key, t in r.transforms.items():
        assert set(t.depends_on) <= set(spec[key].depends_on) | set(spec.keys()), key


@pytest.mark.parametrize(
    "extent, pixel, nside",
    [
        (36.0, 0.75, 49),
        (17.0, 0.75, 23),
        (17.0, 0.5, 35),
        (12.0, 0.5, 25),
        (2.25, 0.75, 3),
        (0.1, 0.75, 1),
        (22.0, 0.75, 31),
    ],
)
def test_nside_is_the_authors_odd_rule(extent, pixel, nside):
    spec, r = reconstruction_spec(), reconstruction_resolver()
    store = ParameterStore.from_spec_defaults(spec).replace(
        {"grid.extent_arcsec": extent, "grid.pixel_scale_arcsec": pixel}
    )
    got = r.resolve(store, "grid.nside")
    assert got == nside and got % 2 == 1 and isinstance(got, int)
    assert got * pixel >= extent - 1e-9
    assert r.resolve(store, "grid.length_arcsec") == nside * pixel


def test_automatic_extent_needs_positions():
    spec, r = reconstruction_spec(), reconstruction_resolver()
    store = ParameterStore.from_spec_defaults(spec)  # extent 0
    with pytest.raises(MissingContextError, match="grid.extent_arcsec = 0 means automatic"):
        r.resolve(store, "grid.nside")
    with pytest.raises(
        MissingContextError,
        match=r"\[crrxr.reconstruction\] .* \(chain: grid.length_arcsec -> grid.nside\)",
    ):
        r.resolve(store, "grid.length_arcsec")
    x = np.array([-7.3, 0.0, 5.0, np.nan])
    y = np.array([1.0, 8.1, -2.0, 30.0])  # the NaN-x sample is ignored even though its y is far
    nside = r.resolve(store, "grid.nside", {"xpos": x, "ypos": y})
    # extent 2 * (8.1 + 2) = 20.2 -> ceil(20.2 / 0.75) = ceil(26.93) = 27 -> (27 // 2) * 2 + 1 = 27
    assert nside == 27


def test_nside_agrees_with_the_core_grid():
    from crrxr.core import grid  # crrxr's own module: a broken import must fail, not skip

    spec, r = reconstruction_spec(), reconstruction_resolver()
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = float(rng.choice([0.25, 0.5, 0.75, 1.0]))
        extent = float(rng.uniform(0.5, 60.0))
        store = ParameterStore.from_spec_defaults(spec).replace(
            {"grid.extent_arcsec": extent, "grid.pixel_scale_arcsec": p}
        )
        assert r.resolve(store, "grid.nside") == grid.Grid.for_extent(p, extent).nside
        x, y = rng.normal(0, 6, 40), rng.normal(0, 6, 40)
        auto = store.replace({"grid.extent_arcsec": 0.0})
        want = grid.Grid.covering(x, y, p, margin=auto["grid.margin_arcsec"]).nside
        assert r.resolve(auto, "grid.nside", {"xpos": x, "ypos": y}) == want


def test_flux_factor_and_seeing_transforms():
    spec, r = reconstruction_spec(), reconstruction_resolver()
    store = ParameterStore.from_spec_defaults(spec).replace({"grid.extent_arcsec": 17.0})
    assert r.resolve(store, "output.flux_factor") == pytest.approx(
        0.75**2 / (math.pi * 1.0**2), rel=1e-15
    )
    wave = np.array([3622.0, 5400.0, 5500.0, 10354.0])
    ref = np.array([1.5, 1.19])
    ctx = {"wavelength": wave, "seeing_fwhm_ref": ref}
    full = refresh_derived(store, spec, r, ctx)
    fwhm = full["seeing.fwhm_arcsec"]
    assert fwhm.shape == (2, 4)
    for e in range(2):
        for w in range(4):
            assert fwhm[e, w] == pytest.approx(ref[e] * (wave[w] / 5400.0) ** -0.2, rel=1e-14)
    assert fwhm[:, 1].tolist() == ref.tolist()  # at the reference wavelength
    assert fwhm[0, 0] > fwhm[0, 3]  # seeing improves to the red
    np.testing.assert_allclose(full["seeing.sigma1_arcsec"], fwhm / 2.355 / 1.05, rtol=1e-15)
    np.testing.assert_allclose(full["seeing.sigma2_arcsec"], 2.0 * fwhm / 2.355 / 1.05, rtol=1e-15)
    full.validate_against(spec, allow_derived=True)
    check_consistency(full, spec, r, ctx)
    other = refresh_derived(store.replace({"seeing.sigma_ratio": 3.0}), spec, r, ctx)
    np.testing.assert_allclose(other["seeing.sigma2_arcsec"], 3.0 * other["seeing.sigma1_arcsec"])


def test_bad_context_is_a_clear_error():
    spec, r = reconstruction_spec(), reconstruction_resolver()
    store = ParameterStore.from_spec_defaults(spec)
    with pytest.raises(ResolveError, match="'wavelength' .* must be finite and > 0"):
        r.resolve(
            store,
            "seeing.fwhm_arcsec",
            {"wavelength": np.array([5000.0, np.nan]), "seeing_fwhm_ref": np.array([1.0])},
        )
    with pytest.raises(ResolveError, match="'seeing_fwhm_ref' must be a non-empty 1-D"):
        r.resolve(
            store,
            "seeing.fwhm_arcsec",
            {"wavelength": np.array([5000.0]), "seeing_fwhm_ref": np.ones((2, 2))},
        )


def test_resolvable_derived_reports_what_needs_data():
    spec, r = reconstruction_spec(), reconstruction_resolver()
    values, reasons = resolvable_derived(load_manga_127(), spec, r)
    assert values == {
        "grid.nside": 49,
        "grid.length_arcsec": 36.75,
        "output.flux_factor": 0.75**2 / (math.pi * 1.0),
    }
    assert set(reasons) == {"seeing.fwhm_arcsec", "seeing.sigma1_arcsec", "seeing.sigma2_arcsec"}
    assert all("wavelength" in why for why in reasons.values())


def load_manga_127() -> ParameterStore:
    from crrxr.params import load_profile

    return load_profile("manga-127")
