//! The admin listener's `/status` page in a real browser: headless Chromium renders it
//! for a 3-node gossip cluster, the page shows every member ALIVE with its key count and
//! the ring with an arc for each; after n3 is killed, the page shows it SUSPECT or DEAD. A screenshot is
//! saved as `<target tmp>/status-page.png`. Skipped, with the reason printed, where no
//! Chromium is installed (`.ci/run` installs Debian's `chromium`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use kv_e2e::{GOSSIP, TestCluster};

/// Longest one browser run may take.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the page may take to show a killed node as SUSPECT or DEAD.
const DETECTION_LIMIT: Duration = Duration::from_secs(30);

fn find_browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Runs headless Chromium with `args` then `url`; returns its standard output.
async fn browse(browser: &Path, args: &[&str], url: &str) -> String {
    let run = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("{} took over {BROWSER_TIMEOUT:?}", browser.display()))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", browser.display()));
    assert!(
        output.status.success(),
        "{} failed: {}",
        browser.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The state the rendered page shows for `node` (the class of its row).
fn shown_state(dom: &str, node: &str) -> Option<String> {
    let row = dom.find(&format!("data-node=\"{node}\""))?;
    let start = dom[..row].rfind("class=\"member ")? + "class=\"member ".len();
    let end = start + dom[start..].find('"')?;
    Some(dom[start..end].to_owned())
}

/// The keys the rendered page shows for `node` (its row's keys cell).
fn shown_keys(dom: &str, node: &str) -> Option<String> {
    let row = dom.find(&format!("data-node=\"{node}\""))?;
    let start = row + dom[row..].find("class=\"keys\">")? + "class=\"keys\">".len();
    let end = start + dom[start..].find('<')?;
    Some(dom[start..end].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_members_the_ring_and_a_dead_node() {
    let Some(browser) = find_browser() else {
        eprintln!("skipped: no chromium, chromium-browser or google-chrome in PATH");
        return;
    };
    let mut cluster = TestCluster::start_with(
        env!("CARGO_BIN_EXE_kvstore-under-test"),
        env!("CARGO_TARGET_TMPDIR"),
        "status_page",
        3,
        &[],
        GOSSIP,
    )
    .await;
    let url = format!("http://{}/status", cluster.admin_address("n1"));
    // Five keys with W=3: every node holds all five when the page is rendered.
    let mut client = cluster.client("n1").await;
    for i in 0..5 {
        let options = kv_client::WriteOptions {
            w: Some(3),
            context: None,
            ..kv_client::WriteOptions::default()
        };
        client.put(&format!("k{i}"), "v", &options).await.unwrap();
    }

    let dom = browse(&browser, &["--dump-dom"], &url).await;
    for node in ["n1", "n2", "n3"] {
        assert_eq!(
            shown_state(&dom, node).as_deref(),
            Some("ALIVE"),
            "{node} in the page: {dom}"
        );
        assert!(
            dom.contains(&format!("class=\"arc\" data-owner=\"{node}\"")),
            "no ring arc owned by {node}: {dom}"
        );
        assert_eq!(
            shown_keys(&dom, node).as_deref(),
            Some("5"),
            "{node}'s keys in the page: {dom}"
        );
    }
    assert!(dom.contains("SERVING"), "{dom}");

    cluster.kill("n3");
    let started = tokio::time::Instant::now();
    loop {
        let dom = browse(&browser, &["--dump-dom"], &url).await;
        let state = shown_state(&dom, "n3");
        if matches!(state.as_deref(), Some("SUSPECT" | "DEAD")) {
            assert!(
                dom.contains(": n3 SUSPECT") || dom.contains(": n3 DEAD"),
                "the page lists no event for n3: {dom}"
            );
            break;
        }
        assert!(
            started.elapsed() < DETECTION_LIMIT,
            "the page still shows n3 as {state:?} {DETECTION_LIMIT:?} after it was killed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let flag = format!("--screenshot={}", shot.display());
    browse(&browser, &[&flag, "--window-size=1150,620"], &url).await;
    let size = std::fs::metadata(&shot).map_or(0, |m| m.len());
    assert!(
        size > 1_000,
        "no screenshot at {} ({size} bytes)",
        shot.display()
    );
    println!("screenshot: {}", shot.display());
}
