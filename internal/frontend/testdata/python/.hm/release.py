import harmont as hm


@hm.pipeline("release", default_image="debian:bookworm")
def release():
    return [hm.sh("package", "echo package")]
