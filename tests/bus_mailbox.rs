//! The cluster's mailbox scripts (`src/bus/mailbox.rs`) against a real `redis-server`: letters
//! kept and taken in order, every cap (letters and bytes per handle, bytes in all), the fair
//! share of sender blocks when full, expiry, and the indexes' invariants after every step.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::redis::{RedisServer, require_redis};
use secchat::bus::{
    Decoder, MAILBOX_COLLECT, MAILBOX_LETTER_OVERHEAD, MAILBOX_LISTEN, MAILBOX_STORE, Reply,
};

/// A blocking connection that sends one command and reads its reply.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(redis: &RedisServer) -> Conn {
        let tcp = TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn {
            tcp,
            buf: Vec::new(),
        }
    }

    fn ask(&mut self, args: &[&[u8]]) -> Reply {
        let mut out = Vec::new();
        secchat::bus::encode_command(&mut out, args);
        self.tcp.write_all(&out).unwrap();
        let mut decoder = Decoder::default();
        loop {
            if let Some((reply, used)) = decoder.next(&self.buf).unwrap() {
                self.buf.drain(..used);
                if let Reply::Error(text) = &reply {
                    panic!("Redis answered an error: {text}");
                }
                return reply;
            }
            let mut chunk = [0u8; 65_536];
            let n = self.tcp.read(&mut chunk).unwrap();
            assert!(n > 0, "Redis closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn text(&mut self, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        self.ask(&args)
    }
}

/// The caps a STORE passes.
#[derive(Clone, Copy)]
struct Rules {
    per_handle: usize,
    bytes_per_handle: usize,
    bytes: usize,
    ttl_ms: u64,
}

const ROOMY: Rules = Rules {
    per_handle: 256,
    bytes_per_handle: 1 << 20,
    bytes: 64 << 20,
    ttl_ms: 60_000,
};

fn store(conn: &mut Conn, rules: Rules, handle: &str, letter: &str, block: &str) -> i64 {
    store_if(conn, rules, handle, letter, block, false)
}

fn store_if(
    conn: &mut Conn,
    rules: Rules,
    handle: &str,
    letter: &str,
    block: &str,
    only_if_nobody_listens: bool,
) -> i64 {
    let kept = store_unchecked(conn, rules, handle, letter, block, only_if_nobody_listens);
    check_invariants(conn);
    kept
}

/// A STORE without the invariants' check after it (for many letters in little time).
fn store_unchecked(
    conn: &mut Conn,
    rules: Rules,
    handle: &str,
    letter: &str,
    block: &str,
    only_if_nobody_listens: bool,
) -> i64 {
    let entry = format!("secchat:h:{handle}");
    let list = format!("secchat:mb:h:{handle}");
    let numbers = [
        rules.per_handle.to_string(),
        rules.ttl_ms.to_string(),
        rules.bytes_per_handle.to_string(),
        rules.bytes.to_string(),
        MAILBOX_LETTER_OVERHEAD.to_string(),
    ];
    let check = if only_if_nobody_listens { "1" } else { "0" };
    let reply = conn.text(&[
        "EVAL",
        MAILBOX_STORE,
        "2",
        &entry,
        &list,
        letter,
        &numbers[0],
        &numbers[1],
        check,
        block,
        &numbers[2],
        &numbers[3],
        &numbers[4],
        handle,
    ]);
    match reply {
        Reply::Integer(n) => n,
        other => panic!("STORE answered {other:?}"),
    }
}

/// LISTEN on `handle` for session `who`: the letters it takes, oldest first.
fn listen(conn: &mut Conn, handle: &str, who: &str) -> Vec<String> {
    listen_with_blocks(conn, handle, who)
        .into_iter()
        .map(|(letter, _)| letter)
        .collect()
}

/// LISTEN on `handle` for session `who`: the letters it takes, oldest first, each with the
/// block its sender's letter counted against ("" when unknown).
fn listen_with_blocks(conn: &mut Conn, handle: &str, who: &str) -> Vec<(String, String)> {
    let entry = format!("secchat:h:{handle}");
    let set = format!("secchat:mb:h:{handle}");
    let legacy = format!("secchat:mail:{handle}");
    let reply = conn.text(&[
        "EVAL",
        MAILBOX_LISTEN,
        "3",
        &entry,
        &set,
        &legacy,
        who,
        "30000",
    ]);
    check_invariants(conn);
    let Reply::Array(Some(parts)) = reply else {
        panic!("LISTEN answered {reply:?}");
    };
    let Some(Reply::Array(Some(mail))) = parts.into_iter().nth(1) else {
        panic!("LISTEN answered no letters array");
    };
    let text = |reply: &Reply| String::from_utf8(reply.as_bytes().unwrap().to_vec()).unwrap();
    mail.chunks(2)
        .map(|pair| (text(&pair[0]), text(&pair[1])))
        .collect()
}

fn strings(reply: Reply) -> Vec<String> {
    match reply {
        Reply::Array(Some(items)) => items
            .into_iter()
            .map(|item| String::from_utf8(item.as_bytes().unwrap_or_default().to_vec()).unwrap())
            .collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

fn pairs(reply: Reply) -> HashMap<String, i64> {
    let items = strings(reply);
    items
        .chunks(2)
        .map(|pair| (pair[0].clone(), pair[1].parse::<f64>().unwrap() as i64))
        .collect()
}

fn number(reply: Reply) -> i64 {
    match reply {
        Reply::Bulk(Some(bytes)) => std::str::from_utf8(&bytes).unwrap().parse().unwrap(),
        Reply::Bulk(None) => 0,
        Reply::Integer(n) => n,
        other => panic!("expected a number, got {other:?}"),
    }
}

/// The invariants `mailbox.rs` states: every index holds exactly the entries and sums over
/// `meta`.
fn check_invariants(conn: &mut Conn) {
    let meta = strings(conn.text(&["HGETALL", "secchat:mb:meta"]));
    let mut bytes = 0i64;
    let mut rank: HashMap<String, i64> = HashMap::new();
    let mut blocks: HashMap<String, Vec<String>> = HashMap::new();
    let mut handles: HashMap<String, Vec<String>> = HashMap::new();
    let mut hbytes: HashMap<String, i64> = HashMap::new();
    for pair in meta.chunks(2) {
        let (n, entry) = (&pair[0], &pair[1]);
        let mut fields = entry.splitn(3, ' ');
        let size: i64 = fields.next().unwrap().parse().unwrap();
        let block = fields.next().unwrap().to_string();
        let handle = fields.next().unwrap().to_string();
        bytes += size;
        *rank.entry(block.clone()).or_default() += size;
        blocks.entry(block).or_default().push(n.clone());
        handles.entry(handle.clone()).or_default().push(n.clone());
        *hbytes.entry(handle).or_default() += size;
        let time = conn.text(&["ZSCORE", "secchat:mb:times", n]);
        assert!(
            matches!(time, Reply::Bulk(Some(_))),
            "letter {n} has no time"
        );
    }
    assert_eq!(number(conn.text(&["GET", "secchat:mb:bytes"])), bytes);
    assert_eq!(
        number(conn.text(&["ZCARD", "secchat:mb:times"])),
        (meta.len() / 2) as i64
    );
    assert_eq!(
        pairs(conn.text(&["ZRANGE", "secchat:mb:rank", "0", "-1", "WITHSCORES"])),
        rank
    );
    assert_eq!(pairs(conn.text(&["HGETALL", "secchat:mb:hbytes"])), hbytes);
    // A handle's or block's set names only its letters, and names every one whose frame is
    // still there (a set expires with its last letter's frame, before a STORE sweeps the
    // letter's other entries).
    let named: HashMap<String, &Vec<String>> = handles
        .iter()
        .map(|(handle, letters)| (format!("secchat:mb:h:{handle}"), letters))
        .chain(
            blocks
                .iter()
                .map(|(block, letters)| (format!("secchat:mb:b:{block}"), letters)),
        )
        .collect();
    for set in strings(conn.text(&["KEYS", "secchat:mb:[hb]:*"])) {
        let letters = named
            .get(&set)
            .map(|letters| letters.as_slice())
            .unwrap_or_default();
        for n in strings(conn.text(&["ZRANGE", &set, "0", "-1"])) {
            assert!(
                letters.contains(&n),
                "{set} names {n}, not one of its letters"
            );
        }
    }
    for (set, letters) in &named {
        let held = strings(conn.text(&["ZRANGE", set, "0", "-1"]));
        for n in letters.iter() {
            let live = number(conn.text(&["EXISTS", &format!("secchat:mb:l:{n}")])) == 1;
            assert!(!live || held.contains(n), "{set} lacks live letter {n}");
        }
    }
    // Nothing is kept without a TTL but the letter counter.
    for key in strings(conn.text(&["KEYS", "secchat:mb:*"])) {
        if key != "secchat:mb:seq" {
            let left = number(conn.text(&["PTTL", &key]));
            assert!(left > 0, "{key} has no TTL ({left})");
        }
    }
}

/// A letter of `len` bytes naming `tag`, so that tests can tell which survived.
fn letter(tag: &str, len: usize) -> String {
    let mut text = format!("{{\"t\":\"{tag}\",\"pad\":\"");
    while text.len() < len - 2 {
        text.push('x');
    }
    text.push_str("\"}");
    text
}

fn tags(letters: &[String]) -> Vec<String> {
    letters
        .iter()
        .map(|letter| {
            let start = letter.find("\"t\":\"").unwrap() + 5;
            let end = letter[start..].find('"').unwrap() + start;
            letter[start..end].to_string()
        })
        .collect()
}

fn start() -> (RedisServer, Conn) {
    require_redis();
    let redis = RedisServer::start();
    let conn = Conn::open(&redis);
    (redis, conn)
}

#[test]
fn letters_come_back_in_order_once_and_leave_nothing_behind() {
    let (_redis, mut conn) = start();
    for tag in ["a", "b", "c"] {
        assert_eq!(
            store(&mut conn, ROOMY, "h1", &letter(tag, 100), "1.0.24"),
            1
        );
    }
    assert_eq!(
        store(&mut conn, ROOMY, "h2", &letter("other", 100), "2.0.24"),
        1
    );
    assert_eq!(tags(&listen(&mut conn, "h1", "S1 node")), ["a", "b", "c"]);
    assert!(listen(&mut conn, "h1", "S1 node").is_empty());
    assert_eq!(tags(&listen(&mut conn, "h2", "S2 node")), ["other"]);
    // Only the directory entries and the letter counter are left.
    let mut keys = strings(conn.text(&["KEYS", "*"]));
    keys.sort();
    assert_eq!(keys, ["secchat:h:h1", "secchat:h:h2", "secchat:mb:seq"]);
}

#[test]
fn a_store_only_while_nobody_listens_is_refused_once_somebody_does() {
    let (_redis, mut conn) = start();
    assert_eq!(
        store_if(&mut conn, ROOMY, "h1", &letter("a", 100), "1.0.24", true),
        1
    );
    listen(&mut conn, "h1", "S1 node");
    assert_eq!(
        store_if(&mut conn, ROOMY, "h1", &letter("b", 100), "1.0.24", true),
        0
    );
    assert!(listen(&mut conn, "h1", "S1 node").is_empty());
}

#[test]
fn a_handle_keeps_its_newest_letters_within_its_letter_and_byte_caps() {
    let (_redis, mut conn) = start();
    let three = Rules {
        per_handle: 3,
        ..ROOMY
    };
    for tag in ["1", "2", "3", "4", "5"] {
        assert_eq!(
            store(&mut conn, three, "h1", &letter(tag, 100), "1.0.24"),
            1
        );
    }
    assert_eq!(tags(&listen(&mut conn, "h1", "S node")), ["3", "4", "5"]);

    // Two letters of 1,000 bytes (plus the overhead each) fit in 3,500, a third does not.
    let bytes = Rules {
        bytes_per_handle: 3_500,
        ..ROOMY
    };
    for tag in ["1", "2", "3"] {
        assert_eq!(
            store(&mut conn, bytes, "h2", &letter(tag, 1_000), "1.0.24"),
            1
        );
    }
    assert_eq!(tags(&listen(&mut conn, "h2", "S node")), ["2", "3"]);
}

#[test]
fn a_letter_larger_than_a_cap_is_refused_and_nothing_changes() {
    let (_redis, mut conn) = start();
    let small = Rules {
        bytes_per_handle: 1_000,
        ..ROOMY
    };
    assert_eq!(
        store(&mut conn, small, "h1", &letter("a", 100), "1.0.24"),
        1
    );
    assert_eq!(
        store(&mut conn, small, "h1", &letter("b", 600), "1.0.24"),
        -1
    );
    assert_eq!(tags(&listen(&mut conn, "h1", "S node")), ["a"]);
}

#[test]
fn when_full_the_block_holding_the_most_loses_its_oldest_and_others_keep_theirs() {
    let (_redis, mut conn) = start();
    // Room for ten letters of 1,000 bytes (1,512 each with the overhead).
    let full = Rules {
        bytes: 10 * 1_512,
        ..ROOMY
    };
    // The victim's block sends two letters, to two handles.
    assert_eq!(
        store(&mut conn, full, "victim1", &letter("v1", 1_000), "2.0.24"),
        1
    );
    assert_eq!(
        store(&mut conn, full, "victim2", &letter("v2", 1_000), "2.0.24"),
        1
    );
    // One block sprays 40 letters over many handles: only its own go.
    for i in 0..40 {
        let handle = format!("spray{}", i % 7);
        assert_eq!(
            store(
                &mut conn,
                full,
                &handle,
                &letter(&format!("s{i}"), 1_000),
                "1.0.24"
            ),
            1
        );
    }
    assert_eq!(number(conn.text(&["GET", "secchat:mb:bytes"])), 10 * 1_512);
    assert_eq!(tags(&listen(&mut conn, "victim1", "V node")), ["v1"]);
    assert_eq!(tags(&listen(&mut conn, "victim2", "V node")), ["v2"]);
    // The sprayer kept its newest eight.
    let mut kept: Vec<String> = (0..7)
        .flat_map(|i| tags(&listen(&mut conn, &format!("spray{i}"), "S node")))
        .collect();
    kept.sort_by_key(|tag| tag[1..].parse::<u32>().unwrap());
    let newest: Vec<String> = (32..40).map(|i| format!("s{i}")).collect();
    assert_eq!(kept, newest);
}

#[test]
fn a_newcomer_block_pushes_out_the_fullest_not_a_small_one() {
    let (_redis, mut conn) = start();
    let full = Rules {
        bytes: 6 * 1_512,
        ..ROOMY
    };
    // Block 1 holds four, block 2 holds two: full.
    for i in 0..4 {
        store(
            &mut conn,
            full,
            "a",
            &letter(&format!("a{i}"), 1_000),
            "1.0.24",
        );
    }
    for i in 0..2 {
        store(
            &mut conn,
            full,
            "b",
            &letter(&format!("b{i}"), 1_000),
            "2.0.24",
        );
    }
    // Block 3's letter pushes out block 1's oldest; block 2's letter (it would then hold
    // three, as block 1 does) pushes out its own oldest.
    store(&mut conn, full, "c", &letter("c0", 1_000), "3.0.24");
    store(&mut conn, full, "b", &letter("b2", 1_000), "2.0.24");
    assert_eq!(tags(&listen(&mut conn, "a", "S node")), ["a1", "a2", "a3"]);
    assert_eq!(tags(&listen(&mut conn, "b", "S node")), ["b1", "b2"]);
    assert_eq!(tags(&listen(&mut conn, "c", "S node")), ["c0"]);
}

#[test]
fn expired_letters_are_gone_and_their_counts_go_with_the_next_store() {
    let (_redis, mut conn) = start();
    let short = Rules {
        ttl_ms: 300,
        ..ROOMY
    };
    store(&mut conn, short, "h1", &letter("old", 100), "1.0.24");
    store(&mut conn, short, "h2", &letter("old2", 100), "1.0.24");
    std::thread::sleep(Duration::from_millis(500));
    // The frames expired by themselves.
    assert_eq!(
        number(conn.text(&["EXISTS", "secchat:mb:l:1", "secchat:mb:l:2"])),
        0
    );
    store(&mut conn, short, "h3", &letter("new", 100), "1.0.24");
    assert_eq!(number(conn.text(&["HLEN", "secchat:mb:meta"])), 1);
    assert!(listen(&mut conn, "h1", "S node").is_empty());
    assert_eq!(tags(&listen(&mut conn, "h3", "S node")), ["new"]);
    // With nothing stored for the TTL, every index key is gone too.
    store(&mut conn, short, "h4", &letter("last", 100), "1.0.24");
    std::thread::sleep(Duration::from_millis(500));
    let mut keys = strings(conn.text(&["KEYS", "secchat:m*"]));
    keys.sort();
    assert_eq!(keys, ["secchat:mb:seq"]);
}

#[test]
fn letters_leaving_from_the_middle_of_a_handle_leave_its_set() {
    let (_redis, mut conn) = start();
    // A victim handle holds one early letter from block 2, then block 1 sends it many: while
    // block 1 holds the most, its letters go from the middle of the victim's set (the
    // invariants, checked after every store, say each set names exactly its letters).
    let full = Rules {
        bytes: 4 * 612,
        ..ROOMY
    };
    store(&mut conn, full, "victim", &letter("keep", 100), "2.0.24");
    for i in 0..200 {
        let handle = if i % 2 == 0 { "victim" } else { "elsewhere" };
        store(
            &mut conn,
            full,
            handle,
            &letter(&format!("s{i}"), 100),
            "1.0.24",
        );
    }
    let got = listen_with_blocks(&mut conn, "victim", "S node");
    assert_eq!(tags(&[got[0].0.clone()]), ["keep"]);
    let blocks: Vec<&str> = got.iter().map(|(_, block)| block.as_str()).collect();
    assert_eq!(blocks[0], "2.0.24");
    assert!(
        blocks[1..].iter().all(|block| *block == "1.0.24"),
        "{blocks:?}"
    );
}

#[test]
fn letters_an_older_version_kept_in_a_list_come_back_first() {
    let (_redis, mut conn) = start();
    conn.text(&["RPUSH", "secchat:mail:h1", &letter("old", 100)]);
    store(&mut conn, ROOMY, "h1", &letter("new", 100), "1.0.24");
    let got: Vec<(String, String)> = listen_with_blocks(&mut conn, "h1", "S node")
        .into_iter()
        .map(|(letter, block)| (tags(&[letter])[0].clone(), block))
        .collect();
    let expected = [("old", ""), ("new", "1.0.24")].map(|(t, b)| (t.to_string(), b.to_string()));
    assert_eq!(got, expected);
    assert_eq!(number(conn.text(&["EXISTS", "secchat:mail:h1"])), 0);
}

#[test]
fn expired_letters_go_before_any_live_letter_is_pushed_out_for_room() {
    let (_redis, mut conn) = start();
    // Room for 100 letters of 100 bytes (612 with the overhead), each kept 2 s.
    let rules = Rules {
        bytes: 100 * 612,
        ttl_ms: 2_000,
        ..ROOMY
    };
    for i in 0..99 {
        let handle = format!("spray{}", i % 9);
        store_unchecked(
            &mut conn,
            rules,
            &handle,
            &letter(&format!("s{i}"), 100),
            "1.0.24",
            false,
        );
    }
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(
        store(&mut conn, rules, "honest", &letter("early", 100), "2.0.24"),
        1
    );
    // The sprayed letters expire; the STORE that finds them sweeps 64, and the 35 left still
    // count until they are swept too: a letter needing their room must not push out the live
    // one instead.
    std::thread::sleep(Duration::from_millis(1_300));
    let big = letter("big", 80 * 612 - 512);
    assert_eq!(store(&mut conn, rules, "honest2", &big, "2.0.24"), 1);
    assert_eq!(tags(&listen(&mut conn, "honest", "H node")), ["early"]);
    assert_eq!(tags(&listen(&mut conn, "honest2", "H node")), ["big"]);
}

#[test]
fn a_time_entry_without_its_letter_is_swept_and_does_not_stop_the_sweep() {
    let (_redis, mut conn) = start();
    conn.text(&["ZADD", "secchat:mb:times", "1", "999999"]);
    conn.text(&["PEXPIRE", "secchat:mb:times", "60000"]);
    assert_eq!(
        store(&mut conn, ROOMY, "h1", &letter("a", 100), "1.0.24"),
        1
    );
    assert!(matches!(
        conn.text(&["ZSCORE", "secchat:mb:times", "999999"]),
        Reply::Bulk(None)
    ));
}

/// COLLECT for one handle whose entry names `who`: the letters it hands back.
fn collect(conn: &mut Conn, handle: &str, who: &str) -> Vec<String> {
    let entry = format!("secchat:h:{handle}");
    let reply = conn.text(&["EVAL", MAILBOX_COLLECT, "1", &entry, who]);
    check_invariants(conn);
    let Reply::Array(Some(found)) = reply else {
        panic!("COLLECT answered {reply:?}");
    };
    let text = |reply: &Reply| String::from_utf8(reply.as_bytes().unwrap().to_vec()).unwrap();
    match found.as_slice() {
        [] => Vec::new(),
        [Reply::Integer(1), Reply::Array(Some(mail))] => {
            mail.chunks(2).map(|pair| text(&pair[0])).collect()
        }
        other => panic!("COLLECT answered {other:?}"),
    }
}

#[test]
fn collect_takes_letters_only_for_the_listener_named_and_at_most_8_mib_at_once() {
    let (_redis, mut conn) = start();
    let roomy = Rules {
        bytes_per_handle: 16 << 20,
        ..ROOMY
    };
    let three_mib = 3 << 20;
    for tag in ["a", "b", "c"] {
        assert_eq!(
            store(&mut conn, roomy, "h1", &letter(tag, three_mib), "1.0.24"),
            1
        );
    }
    conn.text(&["SET", "secchat:h:h1", "S1 node", "PX", "30000"]);
    assert!(
        collect(&mut conn, "h1", "S2 node").is_empty(),
        "another listener"
    );
    assert_eq!(tags(&collect(&mut conn, "h1", "S1 node")), ["a", "b"]);
    assert_eq!(tags(&collect(&mut conn, "h1", "S1 node")), ["c"]);
    assert!(collect(&mut conn, "h1", "S1 node").is_empty());
}
