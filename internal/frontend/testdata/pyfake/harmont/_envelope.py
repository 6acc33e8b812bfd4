import json
import os

from . import _REGISTRY


def dump_registry_json(*, pipeline_org=None, now=None, base_path=None, env=None):
    org = pipeline_org if pipeline_org is not None else os.environ.get("HARMONT_PIPELINE_ORG", "default")
    pipelines = []
    for reg in _REGISTRY:
        definition = {"version": "0", "env": dict(reg["env"], HM_TEST_ORG=org), "steps": reg["fn"]()}
        if reg["default_image"]:
            definition["default_image"] = reg["default_image"]
        pipelines.append({"slug": reg["slug"], "name": reg["name"], "allow_manual": True,
                          "triggers": [], "definition": definition})
    return json.dumps({"schema_version": "1", "pipelines": pipelines})
