import harmont as hm


@hm.pipeline("ci", name="CI", env={"CI": "true"})
def ci():
    return [hm.sh("build", "echo build"), hm.sh("test", "echo test", builds_in="build"),
            hm.wait(continue_on_failure=True), hm.sh("notify", "echo notify")]
