//! Pipeline files: every shipped file is accepted; bad files are refused before anything
//! connects, with `FILE:LINE: reason` and exit code 2.

mod run_support;

use std::path::Path;
use std::process::Command;

use run_support::{RUNNER, pipeline, pipelines, temp_dir};

/// `wilddog-runner ARGS` to completion: exit code, stdout, stderr.
fn runner(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(RUNNER).args(args).env("RUST_LOG", "warn").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(file: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["run", file, "--check"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = runner(&args);
    assert!(stdout.is_empty(), "--check printed events: {stdout}");
    (code, stderr)
}

#[test]
fn every_shipped_pipeline_file_is_accepted() {
    let mut names: Vec<String> = std::fs::read_dir(pipelines())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["call-test.toml", "camera-service.toml", "camera.toml", "echo.toml", "record.toml"]
    );
    for (name, extra) in [
        ("echo.toml", vec![]),
        ("record.toml", vec![]),
        ("call-test.toml", vec![]),
        // The camera file names no one: the command line does (parse only: no devices here).
        ("camera.toml", vec!["--uid", "alice", "--remote-uid", "bob"]),
        ("camera-service.toml", vec![]),
    ] {
        let (code, stderr) = check(&pipeline(name), &extra);
        assert_eq!(code, 0, "{name} refused: {stderr}");
        assert!(stderr.contains(": ok ("), "{name}: {stderr}");
    }
}

#[test]
fn every_shipped_file_says_what_it_is_for() {
    for name in ["call-test.toml", "camera-service.toml", "camera.toml", "echo.toml", "record.toml"]
    {
        let text = std::fs::read_to_string(pipelines().join(name)).unwrap();
        let comment_lines = text.lines().take_while(|l| l.starts_with('#')).count();
        assert!(comment_lines >= 4, "{name} starts with a comment block of {comment_lines} lines");
    }
}

/// Writes `text` as a pipeline file, checks it, and returns the error line of stderr.
fn refused(text: &str) -> String {
    let dir = temp_dir("files");
    let file = dir.join("bad.toml");
    std::fs::write(&file, text).unwrap();
    let (code, stderr) = check(&file.display().to_string(), &[]);
    assert_eq!(code, 2, "exit code for a bad file; stderr: {stderr}");
    let _ = std::fs::remove_dir_all(&dir);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    line.replace(&file.display().to_string(), "FILE")
}

const GOOD_PIPELINE: &str =
    "pipeline = \"wilddogcall name=call videotestsrc is-live=true ! call.video_sink\"\n";

#[test]
fn unknown_key_is_refused_with_its_line() {
    let err =
        refused(&format!("uid = \"a\"\nrole = \"answer\"\nanswr = \"accept\"\n{GOOD_PIPELINE}"));
    assert!(err.starts_with("error: FILE:3: unknown field `answr`"), "{err}");
    assert!(err.contains("expected one of"), "{err}");
}

#[test]
fn wrong_value_is_refused_with_its_line() {
    let err = refused(&format!("uid = \"a\"\n\nrole = \"hangup\"\n{GOOD_PIPELINE}"));
    assert!(err.starts_with("error: FILE:3: unknown variant `hangup`"), "{err}");
}

#[test]
fn missing_pipeline_is_refused() {
    let err = refused("uid = \"a\"\nrole = \"answer\"\n");
    assert!(err.contains("missing field `pipeline`"), "{err}");
}

#[test]
fn launch_description_that_does_not_parse_points_at_the_element() {
    let err = refused(
        "uid = \"a\"\nrole = \"answer\"\npipeline = \"\"\"\nwilddogcall name=call\n  videotestsrc ! nosuchelement ! call.video_sink\n\"\"\"\n",
    );
    assert!(err.starts_with("error: FILE:5: `pipeline` does not parse"), "{err}");
    assert!(err.contains("nosuchelement"), "{err}");
}

#[test]
fn unknown_element_property_is_refused() {
    let err = refused(
        "uid = \"a\"\nrole = \"answer\"\npipeline = \"\"\"\nwilddogcall name=call colour=red\n\"\"\"\n",
    );
    assert!(err.starts_with("error: FILE:4: `pipeline` does not parse"), "{err}");
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn pipeline_without_a_wilddog_element_is_refused() {
    let err = refused("uid = \"a\"\nrole = \"answer\"\n\npipeline = \"videotestsrc ! fakesink\"\n");
    assert!(err.starts_with("error: FILE:4: `pipeline` has no wilddog element"), "{err}");
}

#[test]
fn unknown_variable_is_refused_with_its_line() {
    let err = refused(
        "uid = \"a\"\nrole = \"answer\"\npipeline = \"\"\"\nwilddogcall name=call\n  call.video_src ! filesink location=${recordings}/x\n\"\"\"\n",
    );
    assert!(err.starts_with("error: FILE:5: unknown variable `${recordings}`"), "{err}");
}

#[test]
fn a_caller_needs_someone_to_call() {
    let dir = temp_dir("files");
    let file = dir.join("caller.toml");
    std::fs::write(&file, format!("uid = \"a\"\nrole = \"call\"\n{GOOD_PIPELINE}")).unwrap();
    let (code, stderr) = check(&file.display().to_string(), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--remote-uid"), "{stderr}");
    let (code, stderr) = check(&file.display().to_string(), &["--remote-uid", "bob"]);
    assert_eq!(code, 0, "{stderr}");
    // Not itself: refused before anything connects, saying why.
    let (code, stderr) = check(&file.display().to_string(), &["--remote-uid", "a"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("`a` cannot call itself"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pipeline_of_two_calls_is_refused() {
    let text = "uid = \"a\"\nrole = \"answer\"\npipeline = \"\"\"\nwilddogcall name=one\nwilddogcall name=two\n\"\"\"\n";
    let stderr = refused(text);
    assert!(stderr.contains("2 wilddogcall elements"), "{stderr}");
    assert!(stderr.contains("concurrent_calls"), "{stderr}");
}

#[test]
fn concurrent_calls_are_checked() {
    let err = refused(&format!(
        "uid = \"a\"\nrole = \"answer\"\n\nconcurrent_calls = 0\n{GOOD_PIPELINE}"
    ));
    assert!(err.starts_with("error: FILE:4: `concurrent_calls` must be 1 to 256, not 0"), "{err}");
    let err = refused(&format!(
        "uid = \"a\"\nrole = \"call\"\nremote_uid = \"b\"\nconcurrent_calls = 2\n{GOOD_PIPELINE}"
    ));
    assert!(err.starts_with("error: FILE:4: `concurrent_calls` is for files that answer"), "{err}");

    let echo = pipeline("echo.toml");
    let (code, stderr) = check(&echo, &["--concurrent-calls", "3"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("3 calls at once"), "{stderr}");
    let (code, stderr) = check(&echo, &["--concurrent-calls", "0"]);
    assert_eq!(code, 2, "{stderr}");
    // The old name of --exit-after-calls still works.
    let (code, stderr) = check(&echo, &["--max-calls", "1"]);
    assert_eq!(code, 0, "{stderr}");
    let caller = pipeline("call-test.toml");
    let (code, stderr) = check(&caller, &["--concurrent-calls", "2"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--concurrent-calls is for files that answer"), "{stderr}");
}

#[test]
fn missing_file_is_refused() {
    let (code, stderr) = check("/nonexistent/wilddog.toml", &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/wilddog.toml: cannot read"), "{stderr}");
}

#[test]
fn a_bad_file_is_refused_before_anything_connects() {
    // A real run (not --check) of a bad file: refused with code 2, no events, no server.
    let dir = temp_dir("files");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "uid = \"a\"\nrole = \"answer\"\npipeline = \"videotestsrc ! fakesink\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        runner(&["run", &file.display().to_string(), "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "events from a refused file: {stdout}");
    assert!(!stderr.contains("listening"), "a server started: {stderr}");
    assert!(Path::new(&dir).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file whose calls take their video from `shared_pipeline`.
fn shared_file(shared: &str, call: &str) -> String {
    format!(
        "uid = \"cam\"\nrole = \"answer\"\nshared_pipeline = \"\"\"\n{shared}\n\"\"\"\npipeline = \"\"\"\n{call}\n\"\"\"\n"
    )
}

#[test]
fn shared_pipeline_appsink_without_its_appsrc_is_refused() {
    let err = refused(&shared_file(
        "videotestsrc is-live=true ! appsink name=camera",
        "wilddogcall name=call\n  appsrc name=video ! call.video_sink",
    ));
    // At the appsink (line 4), not at the key's first line.
    assert!(err.starts_with("error: FILE:4: `shared_pipeline`'s `appsink name=camera`"), "{err}");
    assert!(err.contains("`appsrc name=camera`"), "{err}");
}

#[test]
fn an_appsrc_that_shared_pipeline_does_not_feed_is_refused() {
    let err = refused(&shared_file(
        "videotestsrc is-live=true ! appsink name=video",
        "wilddogcall name=call\n  appsrc name=video ! call.video_sink\n  appsrc name=mic ! call.audio_sink",
    ));
    // At the appsrc (line 9), not at the key's first line.
    assert!(err.starts_with("error: FILE:9: `pipeline`'s `appsrc name=mic` has no"), "{err}");
}

#[test]
fn shared_pipeline_with_a_call_element_or_an_unnamed_appsink_is_refused() {
    let err = refused(&shared_file(
        "wilddogcall name=other videotestsrc ! appsink name=video",
        "wilddogcall name=call\n  appsrc name=video ! call.video_sink",
    ));
    assert!(err.starts_with("error: FILE:4: `shared_pipeline` runs once"), "{err}");
    let err = refused(&shared_file(
        "videotestsrc is-live=true ! appsink",
        "wilddogcall name=call\n  appsrc name=video ! call.video_sink",
    ));
    assert!(err.contains("every appsink of `shared_pipeline` needs a name"), "{err}");
    // Each at its element's line (5), not at the key's first.
    let err = refused(&shared_file(
        "videotestsrc is-live=true ! appsink name=video\n  audiotestsrc is-live=true ! appsink",
        "wilddogcall name=call\n  appsrc name=video ! call.video_sink",
    ));
    assert!(err.starts_with("error: FILE:5: every appsink of `shared_pipeline`"), "{err}");
    let err = refused(&shared_file(
        "videotestsrc is-live=true ! appsink name=video\n  wilddogsink name=w",
        "wilddogcall name=call\n  appsrc name=video ! call.video_sink",
    ));
    assert!(err.starts_with("error: FILE:5: `shared_pipeline` runs once"), "{err}");
    let err = refused(&shared_file(
        "videotestsrc ! nosuchelement ! appsink name=video",
        "wilddogcall name=call\n  appsrc name=video ! call.video_sink",
    ));
    assert!(err.starts_with("error: FILE:4: `shared_pipeline` does not parse"), "{err}");
    // At the element that does not exist (line 5), not at the key's first line.
    let err = refused(&shared_file(
        "videotestsrc is-live=true ! appsink name=video\n  videotestsrc ! nosuchelement ! appsink name=other",
        "wilddogcall name=call\n  appsrc name=video ! call.video_sink\n  appsrc name=other ! fakesink",
    ));
    assert!(err.starts_with("error: FILE:5: `shared_pipeline` does not parse"), "{err}");
}

#[test]
fn shared_pipeline_variables_are_checked_and_expanded() {
    // No call owns the shared pipeline: `${conversation_id}` means nothing there.
    let err = refused(&shared_file(
        "videotestsrc is-live=true ! appsink name=video\n  audiotestsrc ! wavenc ! filesink location=${conversation_id}.wav",
        "wilddogcall name=call\n  appsrc name=video ! call.video_sink",
    ));
    assert!(
        err.starts_with(
            "error: FILE:5: unknown variable `${conversation_id}` in `shared_pipeline`"
        ),
        "{err}"
    );
    // `${record_dir}` and `${uid}` are expanded: a missing file names its path, in an `error`
    // event and on stderr, and the runner exits 1 before it is reachable.
    let dir = temp_dir("files");
    let file = dir.join("shared.toml");
    let text = shared_file(
        "filesrc location=${record_dir}/clip-${uid}.mkv ! decodebin ! videoconvert ! appsink name=video",
        "wilddogcall name=call\n  appsrc name=video ! call.video_sink",
    );
    std::fs::write(&file, text).unwrap();
    let record_dir = dir.join("rec");
    let (code, stdout, stderr) = runner(&[
        "run",
        &file.display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--record-dir",
        &record_dir.display().to_string(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    let missing = format!("{}/clip-cam.mkv", record_dir.display());
    assert!(stderr.contains(&missing), "{stderr}");
    let error: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|e: &serde_json::Value| e["event"] == "error")
        .unwrap_or_else(|| panic!("no error event: {stdout}"));
    assert_eq!(error["source"], "shared_pipeline", "{error}");
    assert!(error["message"].as_str().unwrap_or_default().contains(&missing), "{error}");
    assert!(!stdout.contains("\"ready\""), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shared_pipeline_feeding_every_appsrc_is_accepted() {
    let dir = temp_dir("files");
    let file = dir.join("shared.toml");
    let text = shared_file(
        "videotestsrc is-live=true ! appsink name=video\n  audiotestsrc is-live=true ! appsink name=audio",
        "wilddogcall name=call\n  appsrc name=video ! call.video_sink\n  appsrc name=audio ! call.audio_sink",
    );
    std::fs::write(&file, format!("concurrent_calls = 4\n{text}")).unwrap();
    let (code, stderr) = check(&file.display().to_string(), &[]);
    assert_eq!(code, 0, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_property_value_out_of_range_is_refused_at_its_line() {
    // GObject only warned and the element kept its default: `max-fps=99` ran at 30 fps.
    let err = refused(
        "uid = \"x\"\nrole = \"answer\"\npipeline = \"\"\"\nwilddogcall name=call\n  max-fps=99\n  \
         videotestsrc ! call.video_sink\n  call.video_src ! fakesink\n\"\"\"\n",
    );
    assert!(err.starts_with("error: FILE:5: `pipeline` does not parse"), "{err}");
    assert!(err.contains("out of range for property 'max-fps'"), "{err}");
    // And in the shared pipeline.
    let err = refused(&shared_file(
        "videotestsrc is-live=true ! appsink name=video\n  \
         audiotestsrc is-live=true volume=20 ! appsink name=audio",
        "wilddogcall name=call\n  appsrc name=video ! call.video_sink\n  appsrc name=audio ! call.audio_sink",
    ));
    assert!(err.starts_with("error: FILE:5: `shared_pipeline` does not parse"), "{err}");
    assert!(err.contains("'volume'"), "{err}");
}

#[test]
fn two_elements_of_one_name_are_refused_at_the_second() {
    // GStreamer's error named neither: "could not link videotestsrc1 to camera".
    let err = refused(&shared_file(
        "videotestsrc is-live=true ! appsink name=camera\n  \
         videotestsrc is-live=true pattern=ball ! appsink name=camera",
        "wilddogcall name=call\n  appsrc name=camera ! call.video_sink",
    ));
    assert_eq!(
        err,
        "error: FILE:5: two elements named `camera` in `shared_pipeline`: names must differ"
    );
    let err = refused(
        "uid = \"x\"\nrole = \"answer\"\npipeline = \"\"\"\nwilddogcall name=call\n  \
         videotestsrc device-name=a ! call.video_sink\n  call.video_src ! fakesink name=call\n\"\"\"\n",
    );
    assert!(err.starts_with("error: FILE:6: two elements named `call` in `pipeline`"), "{err}");
}

#[test]
fn recordings_a_dead_runner_left_are_made_visible() {
    let dir = temp_dir("leftovers");
    // Above Linux's largest pid: that runner is surely gone. Ours is alive: left alone.
    let dead = dir.join(".wilddog-call-4194999-0.mkv");
    let alive = dir.join(format!(".wilddog-call-{}-0.mkv", std::process::id()));
    std::fs::write(&dead, b"partial").unwrap();
    std::fs::write(&alive, b"in progress").unwrap();
    let dir_arg = dir.display().to_string();
    let mut recorder = run_support::Runner::start(
        "recorder",
        &["run", &pipeline("record.toml"), "--listen", "127.0.0.1:0", "--record-dir", &dir_arg],
    );
    recorder.wait_event("ready");
    recorder.signal("INT");
    assert_eq!(recorder.wait_exit(), 0, "stderr:\n{}", recorder.stderr());
    assert!(!dead.exists(), "the dead runner's recording is still hidden");
    let visible = dir.join("unfinished-4194999-0.mkv");
    assert_eq!(std::fs::read(&visible).unwrap_or_default(), b"partial");
    assert!(recorder.stderr().contains("unfinished-4194999-0.mkv"), "{}", recorder.stderr());
    assert!(alive.exists(), "a live runner's recording was moved");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn call_timeout_the_element_refuses_is_refused_before_anything_runs() {
    // `call_timeout = 0` passed the check, then the runner panicked setting the element's
    // `call-timeout` (100 ms at least): an answering runner hung without slots.
    let err = refused(&format!(
        "uid = \"a\"\nrole = \"call\"\nremote_uid = \"b\"\ncall_timeout = 0\n{GOOD_PIPELINE}"
    ));
    assert!(err.starts_with("error: FILE:4: `call_timeout`: must be 0.1 to "), "{err}");
    assert!(err.ends_with("seconds, not 0"), "{err}");
    let caller = pipeline("call-test.toml");
    let echo = pipeline("echo.toml");
    for (file, flag) in [(&caller, "0.05"), (&echo, "0.05"), (&echo, "0")] {
        let (code, stderr) = check(file, &["--call-timeout", flag]);
        assert_eq!(code, 2, "{file} --call-timeout {flag}: {stderr}");
        assert!(stderr.contains("--call-timeout"), "{stderr}");
    }
    let (code, stderr) = check(&caller, &["--call-timeout", "0.1"]);
    assert_eq!(code, 0, "{stderr}");
}
