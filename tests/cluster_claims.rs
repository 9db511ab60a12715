//! One owner per stream across nodes: two nodes on one PostgreSQL database, and two publishers
//! of one stream started at the same instant, one on each node, twenty times over. Each time
//! exactly one is accepted (the database claim decides; what the nodes heard of each other
//! does not have time to), and the refused one is told which node has the stream.

mod support;

use std::io::Read;
use std::time::Duration;

use support::*;

const SECRET: &str = "a-cluster-secret-shared-by-every-node-0123456789";
const ROUNDS: usize = 20;

/// Sessions of every state, as node `server` lists them.
fn sessions(server: &Server) -> Vec<serde_json::Value> {
    let (status, body) = api(
        server,
        "GET",
        "/api/v1/sessions?state=all",
        Some(&server.admin_token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn two_publishers_at_the_same_instant_on_two_nodes_exactly_one_is_accepted() {
    let database = PostgresDatabase::create();
    let url = database.url();
    let env = [
        ("STRATA__DATABASE__URL", url.as_str()),
        ("STRATA__AUTH__SECRET", SECRET),
    ];
    let a = Server::start_with_env(&env, |_| {});
    let mut b = Server::start_with_env(&env, |_| {});
    b.admin_token = a.admin_token.clone();
    let stream = a.create_stream("contested", "passthrough");
    for round in 0..ROUNDS {
        let mut on_a = publish(&a.rtmp_url(&stream.key), 1);
        let mut on_b = publish(&b.rtmp_url(&stream.key), 1);
        let results: Vec<(bool, String)> = [&mut on_a, &mut on_b]
            .into_iter()
            .map(|ffmpeg| {
                let ok = ffmpeg.wait().expect("ffmpeg").success();
                let mut said = String::new();
                if let Some(mut e) = ffmpeg.stderr.take() {
                    let _ = e.read_to_string(&mut said);
                }
                (ok, said)
            })
            .collect();
        let accepted = results.iter().filter(|(ok, _)| *ok).count();
        assert_eq!(
            accepted,
            1,
            "round {round}: {accepted} publishers accepted: {results:?}\nA:\n{}\nB:\n{}",
            a.log(),
            b.log()
        );
        let (_, refused) = results.iter().find(|(ok, _)| !ok).expect("one was refused");
        assert!(
            refused.contains("stream live on another node"),
            "round {round}: {refused}"
        );
        // the next round starts once this broadcast has ended (and released its claim)
        let ended = wait_for(Duration::from_secs(15), || {
            let all = sessions(&a);
            (all.len() == round + 1 && all.iter().all(|s| s["state"] == "ended")).then_some(())
        });
        assert!(ended.is_some(), "round {round}: {:?}", sessions(&a));
    }
    let log = a.log() + &b.log();
    assert!(log.contains("the stream is live on node"), "{log}");
}
