"""Write the openAPIV3Schema of each served version of the CustomResourceDefinitions given
(YAML files) to ``<group>_<kind>_<version>.json`` next to this script, verbatim.

    python3 tests/deploy/crd_schemas/extract.py monitoring.coreos.com_servicemonitors.yaml ...

tests/deploy/test_helm_chart.py validates the chart's custom resources against them (README.md
here says where each CRD comes from).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def main(paths: list[str]) -> int:
    for path in paths:
        crd = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if crd.get("kind") != "CustomResourceDefinition":
            print(f"{path}: not a CustomResourceDefinition (kind {crd.get('kind')!r})", file=sys.stderr)
            return 1
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            out = HERE / f"{group}_{kind}_{version['name']}.json"
            out.write_text(
                json.dumps(version["schema"]["openAPIV3Schema"], indent=1, sort_keys=True) + "\n", encoding="utf-8"
            )
            print(out.name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
