"""The library in one import: every name `classp` exports is there."""

import classp


def test_every_exported_name_imports():
    for name in classp.__all__:
        assert getattr(classp, name) is not None, name
    assert callable(classp.run) and classp.RunConfig().sequence == "split-digits"
    assert classp.metrics.acc([[0.1, 0.1], [0.9, 0.1], [0.8, 0.9]]) == (0.8 + 0.9) / 2
