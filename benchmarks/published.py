"""Published and locally measured reference numbers of the DCM protocol (``SCMS.md``).

``PUBLISHED``: medians read off DCM's box plots (raw values, not x100), order DCM / ANM / VACA /
CAREFL. ``MEASURED``: DCM's own code and DoWhy's ANM re-run on this kind of 2-core CPU, x100,
10-seed means; ``cf_first`` is DCM's first-descendant-column variant, ``cf_all`` all descendants.
"""

from __future__ import annotations

METHODS = ("DCM", "ANM", "VACA", "CAREFL")

# (scm, variant) -> metric -> per-method median (raw)
PUBLISHED: dict[tuple[str, str], dict[str, tuple[float, ...]]] = {
    ("dcm-chain", "nonlinear"): {
        "obs_mmd": (0.0025, 0.0010, 0.0150, 0.0425),
        "int_mmd": (0.0175, 0.0166, 0.0998, 0.0852),
        "cf_mse": (0.0035, 0.0163, 0.250, 0.206),
    },
    ("dcm-chain", "nonadditive"): {
        "obs_mmd": (0.0014, 0.0137, 0.0155, 0.0360),
        "int_mmd": (0.0281, 0.0718, 0.1088, 0.1102),
        "cf_mse": (0.761, 0.896, 0.985, 1.050),
    },
    ("dcm-triangle", "nonlinear"): {
        "obs_mmd": (0.0016, 0.0010, 0.0280, 0.0448),
        "int_mmd": (0.0146, 0.0312, 0.183, 0.0706),
        "cf_mse": (0.0109, 0.101, 1.766, 0.349),
    },
    ("dcm-triangle", "nonadditive"): {
        "obs_mmd": (0.0021, 0.0047, 0.0251, 0.0502),
        "int_mmd": (0.0278, 0.0541, 0.114, 0.0421),
        "cf_mse": (0.246, 0.920, 1.701, 1.194),
    },
    ("dcm-y", "nonlinear"): {
        "obs_mmd": (0.0010, 0.0011, 0.0210, 0.0674),
        "int_mmd": (0.0122, 0.0142, 0.0949, 0.146),
        "cf_mse": (0.0019, 0.0127, 0.291, 0.280),
    },
    ("dcm-y", "nonadditive"): {
        "obs_mmd": (0.0017, 0.0097, 0.0157, 0.0339),
        "int_mmd": (0.0147, 0.0564, 0.0539, 0.0642),
        "cf_mse": (0.330, 0.466, 0.602, 0.522),
    },
    ("dcm-diamond", "nonlinear"): {
        "obs_mmd": (0.0024, 0.0011, 0.0279, 0.0811),
        "int_mmd": (0.0291, 0.0260, 0.246, 0.177),
        "cf_mse": (0.143, 0.137, 1.343, 6.044),
    },
    ("dcm-diamond", "nonadditive"): {
        "obs_mmd": (0.0018, 0.0028, 0.0227, 0.0545),
        "int_mmd": (0.0194, 0.0437, 0.123, 0.158),
        "cf_mse": (0.0131, 0.0882, 0.566, 0.228),
    },
    ("dcm-ladder", "nonlinear"): {
        "obs_mmd": (0.0045, 0.0062, 0.0266, 0.134),
        "int_mmd": (0.0160, 0.0184, 0.0422, 0.149),
        "cf_mse": (0.031, 0.102, 0.352, 0.179),
    },
    ("dcm-ladder", "nonadditive"): {
        "obs_mmd": (0.0031, 0.0034, 0.0305, 0.145),
        "int_mmd": (0.0154, 0.0159, 0.0487, 0.164),
        "cf_mse": (0.039, 0.093, 0.284, 0.205),
    },
    ("dcm-random", "nonlinear"): {
        "obs_mmd": (0.0027, 0.0046, 0.0170, 0.120),
        "int_mmd": (0.0145, 0.0185, 0.0345, 0.138),
        "cf_mse": (0.051, 0.115, 0.476, 0.259),
    },
    ("dcm-random", "nonadditive"): {
        "obs_mmd": (0.0019, 0.0029, 0.0204, 0.127),
        "int_mmd": (0.0139, 0.0156, 0.0376, 0.149),
        "cf_mse": (0.063, 0.152, 0.437, 0.275),
    },
}


def _m(cf_first1, cf_all1, cf2, int1, int2, obs):
    return {
        "cf_first": {"x1": cf_first1, "x2": cf2},
        "cf_all": {"x1": cf_all1, "x2": cf2},
        "int_mmd": {"x1": int1, "x2": int2},
        "obs_mmd": obs,
    }


# (scm, variant) -> method -> metric (x100); fit/query seconds are per (scm, seed)
MEASURED: dict[tuple[str, str], dict[str, dict]] = {}
for _key, _rows in {
    ("dcm-triangle", "nonlinear"): {
        "DCM": (0.17, 0.85, 2.0, 1.43, 1.37, 0.21),
        "ANM": (0.002, 1.32, 19.0, 1.33, 4.61, 0.15),
    },
    ("dcm-triangle", "nonadditive"): {
        "DCM": (22.4, 19.5, 25.6, 4.83, 1.25, 0.26),
        "ANM": (27.2, 46.1, 85.9, 8.60, 2.22, 0.62),
    },
    ("dcm-chain", "nonlinear"): {
        "DCM": (0.18, 0.46, 0.37, 1.45, 1.38, 0.36),
        "ANM": (1.03, 2.17, 1.90, 1.37, 2.01, 0.15),
    },
    ("dcm-chain", "nonadditive"): {
        "DCM": (143.5, 102.6, 0.85, 1.34, 3.93, 0.29),
        "ANM": (148.2, 115.3, 16.8, 2.10, 11.08, 0.80),
    },
}.items():
    MEASURED[_key] = {}
    for _method, _v in _rows.items():
        _row = _m(*_v)
        _row["fit_s"] = 60.0 if _method == "DCM" else 5.0  # ANM: 3.5-8 s
        _row["query_s"] = 4.0 if _method == "DCM" else 0.5
        MEASURED[_key][_method] = _row

MMD_FLOOR = {"obs_mmd": (0.10, 0.12), "int_mmd": (1.0, 1.3)}
"""x100 MMD of the true SCM against fresh true samples at the protocol's sample sizes."""
