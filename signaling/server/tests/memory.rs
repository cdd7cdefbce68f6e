//! What an idle authenticated connection costs a cluster node in resident memory (the issue's
//! target is under 10 KiB). The node is a process of its own (this test binary run again as
//! `node_process_for_memory_test`) on a real `redis-server`, so that its VmRSS is its own;
//! the connections come from this process. What one more connection costs is measured
//! between 1,000 and 3,000 connections, without the node's fixed costs.
//!
//! The figure does not depend on the machine's load: it is memory, not time.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::Client;
use tokio::sync::Semaphore;
use wilddog_server::{ClusterConfig, DEV_APP_ID, ServerConfig, mint_token};

/// The bound this test holds the server to, per idle connection (a node measured 9.6 KiB
/// before its session task was trimmed and its queue made lean; 4.5 KiB after).
const MAX_KIB_PER_CONNECTION: f64 = 7.0;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the process when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Not a test: the body of the node process of the test below (this binary run again with
/// `WILDDOG_MEMORY_TEST_REDIS` and `WILDDOG_MEMORY_TEST_PORT` set). Serves until killed.
#[test]
fn node_process_for_memory_test() {
    let Ok(redis_url) = std::env::var("WILDDOG_MEMORY_TEST_REDIS") else { return };
    let port: u16 = std::env::var("WILDDOG_MEMORY_TEST_PORT").unwrap().parse().unwrap();
    rlimit::increase_nofile_limit(16_384).unwrap();
    let mut config = ServerConfig::development();
    config.builtin_stun = false;
    config.ice_servers = vec![wilddog_server::IceServerConfig {
        urls: wilddog_server::UrlList::One("stun:127.0.0.1:3478".into()),
        username: None,
        credential: None,
    }];
    config.cluster = Some(ClusterConfig::new(redis_url));
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        wilddog_server::run(listener, config, std::future::pending()).await.unwrap();
    });
}

async fn open_many(addr: SocketAddr, range: std::ops::Range<usize>) -> Vec<Client> {
    let gate = Arc::new(Semaphore::new(100));
    let mut tasks = Vec::new();
    for i in range {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let token = mint_token(
                &ServerConfig::development(),
                DEV_APP_ID,
                &format!("idle-{i}"),
                Duration::from_secs(600),
            )
            .unwrap();
            let mut c = Client::open(&format!("ws://{addr}/ws")).await;
            c.connect(DEV_APP_ID, &token).await;
            c
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_costs_a_cluster_node_little_memory() {
    rlimit::increase_nofile_limit(16_384).unwrap();
    let redis_port = free_port();
    let _redis = Process(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/install-deps.sh installs it)"),
    );
    while tokio::net::TcpStream::connect(("127.0.0.1", redis_port)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The node's port is chosen here: the test harness captures what the node prints.
    let port = free_port();
    let node = Process(
        Command::new(std::env::current_exe().unwrap())
            .args(["node_process_for_memory_test", "--exact", "--nocapture", "--test-threads", "1"])
            .env("WILDDOG_MEMORY_TEST_REDIS", format!("redis://127.0.0.1:{redis_port}/"))
            .env("WILDDOG_MEMORY_TEST_PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = node.0.id();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = std::time::Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "the node did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut clients = open_many(addr, 0..1_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_1000 = vm_rss_kib(pid);
    clients.extend(open_many(addr, 1_000..3_000).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_3000 = vm_rss_kib(pid);
    let per_connection = at_3000.saturating_sub(at_1000) as f64 / 2_000.0;
    assert!(
        per_connection < MAX_KIB_PER_CONNECTION,
        "{per_connection:.2} KiB per idle connection (VmRSS {at_1000} KiB at 1,000, {at_3000} KiB \
         at 3,000)"
    );
    // They are all still served.
    for c in clients.iter_mut().step_by(500) {
        c.send_json(serde_json::json!({"type": "call", "cid": "x", "to": "nobody", "msg": {}}))
            .await;
        assert!(matches!(c.recv().await, wilddog_protocol::ServerFrame::Unreachable { .. }));
    }
    eprintln!("{per_connection:.2} KiB per idle connection in cluster mode");
}
