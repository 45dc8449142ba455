"""Write conf/toy/default.yaml from the ToyConfig dataclass defaults (run after changing them).

tests/config checks that the two agree, so conf/ stays the one place a user reads sizes.
"""

from dataclasses import fields
from pathlib import Path

from red_cli.toy.settings import ToyConfig

HEADER = (
    "# The embedded toy task's build settings (red_cli/toy/settings.py has the schema).\n"
    "# Changing any value builds and caches a different toy world under $RED_CACHE.\n"
)


def render() -> str:
    cfg = ToyConfig()
    return HEADER + "".join(f"{f.name}: {getattr(cfg, f.name)!r}\n".replace("None", "null")
                            for f in fields(cfg))


if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "conf" / "toy" / "default.yaml"
    path.write_text(render())
    print(f"wrote {path}")
