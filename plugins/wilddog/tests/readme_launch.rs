//! The two `gst-launch-1.0` lines of the top-level README ("Using the elements": Bob
//! answers, Alice calls) run as written, against a real server at the address they name,
//! with the built plugin: the test reads them from README.md, so it fails when they drift.
//! The one substitution is the documented one for a machine without a display or sound:
//! `autovideosink`/`autoaudiosink` become `fakesink sync=false`. The two-halves line of
//! docs/elements.md runs the same way (its sink stays one that syncs on the clock).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TestServer;

/// The `gst-launch-1.0` commands of the README's block after `marker`, continuation lines
/// joined.
fn readme_commands(marker: &str) -> Vec<String> {
    doc_commands("README.md", marker)
}

/// The `gst-launch-1.0` commands of the block after `marker` in `file` (relative to the
/// workspace root), continuation lines joined.
fn doc_commands(file: &str, marker: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let after = &text[text.find(marker).unwrap_or_else(|| panic!("{file} lacks `{marker}`"))..];
    let block = after.split("```sh\n").nth(1).expect("a sh block after the marker");
    let block = block.split("```").next().unwrap();
    let joined = block.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("gst-launch-1.0"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Runs `command` in `sh` (so `$BOB`/`$ALICE` expand as for a user) and sends each line of
/// its output to `lines`.
fn launch(
    command: &str,
    env: (&str, &str),
    who: &'static str,
    lines: mpsc::Sender<(&'static str, String)>,
) -> Child {
    let mut child = common::with_built_plugin(Command::new("sh"), "readme")
        .arg("-c")
        .arg(format!("exec {command}"))
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gst-launch-1.0 runs (gstreamer1.0-tools)");
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = lines.send((who, line));
            }
        });
    }
    child
}

fn stop(child: &mut Child) {
    // SIGINT: gst-launch-1.0 stops the pipeline (NULL) and exits, as after Ctrl-C.
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("gst-launch-1.0 did not exit within 10 s of SIGINT");
}

#[test]
fn readme_gst_launch_lines_make_a_call() {
    if !common::enter_netns("readme_gst_launch_lines_make_a_call") {
        return;
    }
    let commands = readme_commands("Bob answers calls and shows");
    assert_eq!(commands.len(), 2, "README should show Bob's and Alice's lines: {commands:?}");
    let substitute = |c: &str| {
        c.replace("autovideosink", "fakesink sync=false")
            .replace("autoaudiosink", "fakesink sync=false")
    };
    let bob_line = substitute(&commands[0]);
    let alice_line = substitute(&commands[1]);
    assert!(bob_line.contains("token=$BOB") && alice_line.contains("token=$ALICE"));
    // The server at the address the lines name (free: this is a private namespace).
    let server = server_named_in(&bob_line);

    let (tx, rx) = mpsc::channel();
    println!("bob:   {bob_line}\nalice: {alice_line}");
    let mut bob = launch(&bob_line, ("BOB", &server.token("bob")), "bob", tx.clone());
    // Bob is connected when his pipeline is PLAYING.
    let mut log: Vec<(&str, String)> = Vec::new();
    let wait = |log: &mut Vec<(&str, String)>, who: &str, what: &[&str], within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            if log.iter().any(|(w, l)| *w == who && what.iter().all(|p| l.contains(p))) {
                return;
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => log.push(line),
                Err(_) => panic!(
                    "{who}: no line with {what:?} within {within:?}; output:\n{}",
                    log.iter().map(|(w, l)| format!("{w}: {l}")).collect::<Vec<_>>().join("\n")
                ),
            }
        }
    };
    wait(&mut log, "bob", &["Setting pipeline to PLAYING"], Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    let mut alice = launch(&alice_line, ("ALICE", &server.token("alice")), "alice", tx);
    let t = Duration::from_secs(20);
    wait(&mut log, "bob", &["wilddog-called", "alice"], t);
    wait(&mut log, "alice", &["wilddog-response", "ACCEPTED"], t);
    // Bob's line only receives (Alice's line has no src pads linked): Bob decodes Alice's
    // test pattern.
    wait(&mut log, "bob", &["wilddog-stream-received"], t);
    wait(&mut log, "bob", &["wilddog-first-frame", "width=(uint)640", "height=(uint)480"], t);
    for (w, l) in log.iter().filter(|(_, l)| l.contains("wilddog-")) {
        println!("{w}: {l}");
    }
    stop(&mut alice);
    stop(&mut bob);
}

/// The line of docs/elements.md ("`wilddogsink` and `wilddogsrc`": the two halves of Alice's
/// call) runs as written against an answering Bob, and gst-launch-1.0 prints no "please add
/// queues" warning. Its `autovideosink` becomes `fakesink sync=true`, not `sync=false`: the
/// warning came from a sink that syncs on the clock (with basesink's 20 ms processing
/// deadline) finding wilddogsrc's max latency (0) below the min plus that deadline.
#[test]
fn elements_doc_halves_line_runs_without_a_latency_warning() {
    if !common::enter_netns("elements_doc_halves_line_runs_without_a_latency_warning") {
        return;
    }
    let commands = doc_commands("docs/elements.md", "## `wilddogsink` and `wilddogsrc`");
    assert_eq!(commands.len(), 1, "docs/elements.md should show one halves line: {commands:?}");
    let line = commands[0].replace("autovideosink", "fakesink sync=true");
    assert!(line.contains("wilddogsrc") && line.contains("fakesink sync=true"), "{line}");
    assert!(line.contains("token=$ALICE") && line.contains("remote-uid=bob"), "{line}");
    let server = server_named_in(&line);
    // Bob answers with video only: the line links only wilddogsrc's video_src.
    let mut bob_cfg = common::EndpointConfig::new("bob");
    bob_cfg.send_audio = false;
    let bob = common::Endpoint::new(&server, bob_cfg);
    bob.play();
    std::thread::sleep(Duration::from_millis(300));

    let (tx, rx) = mpsc::channel();
    println!("alice: {line}");
    let mut alice = launch(&line, ("ALICE", &server.token("alice")), "alice", tx);
    let mut log: Vec<(&str, String)> = Vec::new();
    let mut wait = |what: &[&str], within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            if log.iter().any(|(_, l)| what.iter().all(|p| l.contains(p))) {
                return;
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => log.push(line),
                Err(_) => panic!(
                    "no line with {what:?} within {within:?}; output:\n{}",
                    log.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n")
                ),
            }
        }
    };
    let t = Duration::from_secs(20);
    wait(&["wilddog-first-frame"], t);
    // The sink is PLAYING once it prerolled on Bob's first frame and gst-launch-1.0 set the
    // latency (its "Redistribute latency...", where the warning came): every message before
    // is printed by then.
    wait(&["\"fakesink0\" (state-changed)", "new-state=(GstState)playing"], t);
    stop(&mut alice);
    let output = log.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n");
    assert!(output.contains("Redistribute latency"), "no latency was set:\n{output}");
    assert!(
        !output.contains("please add queues") && !output.contains("WARNING"),
        "gst-launch-1.0 warned:\n{output}"
    );
}

/// A signaling server started at the address a launch line's `server=ws://HOST:PORT/ws`
/// names (free: the tests run in a private network namespace).
fn server_named_in(line: &str) -> TestServer {
    let url = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("server="))
        .expect("a server= property")
        .to_owned();
    let addr = url
        .strip_prefix("ws://")
        .and_then(|r| r.strip_suffix("/ws"))
        .unwrap_or_else(|| panic!("server={url} is not ws://HOST:PORT/ws"));
    let server = TestServer::start_on(addr);
    assert_eq!(server.url, url);
    server
}
