"""A stand-in for the harmont package in hm's tests: just enough API for the .hm/*.py files of
testdata, printing the schema_version=1 envelope that harmont._envelope.dump_registry_json
prints (each pipeline's IR in the flat form that harmont's factory assembles)."""

_REGISTRY = []


def pipeline(slug, *, name=None, env=None, default_image=None):
    def register(fn):
        _REGISTRY.append({"slug": slug, "name": name or slug, "fn": fn, "env": env or {},
                          "default_image": default_image})
        return fn
    return register


def sh(key, cmd, builds_in=None):
    return {"type": "command", "key": key, "cmd": cmd, "builds_in": builds_in}


def wait(continue_on_failure=False):
    return {"type": "wait", "continue_on_failure": continue_on_failure}
