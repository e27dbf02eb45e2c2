//! Micro-benchmarks of the pure hot-path pieces: request parsing, key hashing, routing (with
//! the split commands' encoding), reply-frame scanning, the per-reply wake-up and the reply
//! slots and queues a request borrows from its worker thread. No sockets,
//! no cluster. Run with `cargo bench --bench micro`.
//!
//! Every benchmark builds its input once outside the timed loop; where the function under test
//! consumes its input (the parser drains its buffer), the buffer is cloned per iteration with
//! `iter_batched`, so only the parse itself is timed.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use slotproxy::cluster::slots::key_slot;
use slotproxy::route::protocol::{Limits, RequestParser};
use slotproxy::route::resp::{encode_command, ReplyScanner};
use slotproxy::route::router::{analyse_request, route, Route};

/// `n` pipelined `GET key:NNNNN` requests, multibulk-encoded as a client sends them.
fn pipelined_gets(n: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..n {
        let key = format!("key:{:05}", i * 7919 % 100_000);
        buf.extend_from_slice(&encode_command(&[b"GET".as_slice(), key.as_bytes()]));
    }
    buf
}

/// One `MSET k1 v1 ... kN vN` request with 3-byte values, as redis-benchmark's `-t mset`.
fn mset(pairs: usize) -> BytesMut {
    let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
    for i in 0..pairs {
        args.push(format!("key:{:05}", i * 7919 % 100_000).into_bytes());
        args.push(b"xxx".to_vec());
    }
    encode_command(&args)
}

/// Parses every request out of `buf`; returns how many there were.
fn parse_all(parser: &mut RequestParser, mut buf: BytesMut) -> usize {
    let mut n = 0;
    while let Some(req) = parser.parse(&mut buf).expect("valid input") {
        black_box(&req);
        n += 1;
    }
    n
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");

    let gets = pipelined_gets(16);
    assert_eq!(
        parse_all(&mut RequestParser::new(Limits::default()), gets.clone()),
        16
    );
    g.throughput(Throughput::Elements(16));
    g.bench_function("16_pipelined_get", |b| {
        let mut parser = RequestParser::new(Limits::default());
        b.iter_batched(
            || gets.clone(),
            |buf| parse_all(&mut parser, buf),
            BatchSize::SmallInput,
        )
    });

    let ms = mset(10);
    assert_eq!(
        parse_all(&mut RequestParser::new(Limits::default()), ms.clone()),
        1
    );
    g.throughput(Throughput::Elements(1));
    g.bench_function("mset_10_pairs", |b| {
        let mut parser = RequestParser::new(Limits::default());
        b.iter_batched(
            || ms.clone(),
            |buf| parse_all(&mut parser, buf),
            BatchSize::SmallInput,
        )
    });

    g.finish();
}

fn bench_key_slot(c: &mut Criterion) {
    let mut g = c.benchmark_group("key_slot");
    g.throughput(Throughput::Elements(1));
    g.bench_function("short_key", |b| {
        b.iter(|| key_slot(black_box(b"key:12345".as_slice())))
    });
    g.bench_function("hash_tagged_key", |b| {
        b.iter(|| key_slot(black_box(b"user:{1000}:followers:recent".as_slice())))
    });
    g.finish();
}

fn args_of(parts: &[&[u8]]) -> Vec<Bytes> {
    parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
}

fn bench_route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(1));

    let get = args_of(&[b"GET", b"key:12345"]);
    assert!(matches!(route(&get, &mut Vec::new()), Route::Slot(_)));
    g.bench_function("get", |b| {
        let mut keys = Vec::new();
        b.iter(|| route(black_box(&get), &mut keys))
    });

    let mut mget = vec![Bytes::from_static(b"MGET")];
    for i in 0..10 {
        mget.push(Bytes::from(format!("key:{:05}", i * 7919 % 100_000)));
    }
    match route(&mget, &mut Vec::new()) {
        Route::Split(s) => assert!(s.parts.len() > 1, "the 10 keys should span several slots"),
        other => panic!("MGET of 10 keys did not split: {other:?}"),
    }
    g.bench_function("mget_10_keys_split", |b| {
        let mut keys = Vec::new();
        b.iter(|| route(black_box(&mget), &mut keys))
    });

    // The split now also encodes every part's request (into one buffer).
    let mut mset = vec![Bytes::from_static(b"MSET")];
    for i in 0..10 {
        mset.push(Bytes::from(format!("key:{:05}", i * 7919 % 100_000)));
        mset.push(Bytes::from_static(b"xxx"));
    }
    assert!(matches!(route(&mset, &mut Vec::new()), Route::Split(_)));
    g.bench_function("mset_10_keys_split_and_encoded", |b| {
        let mut keys = Vec::new();
        b.iter(|| route(black_box(&mset), &mut keys))
    });

    // As the session does it: the arguments are slices of the client's frame, and each
    // part's keys are copied from it as they were encoded.
    let mut parser = RequestParser::new(Limits::default());
    let mut frame_buf = encode_command(&mset);
    let mut parsed = Vec::new();
    let Ok(Some(Some(frame))) = parser.parse_into(&mut frame_buf, &mut parsed) else {
        panic!("the MSET did not parse")
    };
    assert!(matches!(
        analyse_request(&parsed, Some(&frame), &mut Vec::new()).route,
        Route::Split(_)
    ));
    g.bench_function("mset_10_keys_split_cut_from_the_frame", |b| {
        let mut keys = Vec::new();
        b.iter(|| analyse_request(black_box(&parsed), Some(&frame), &mut keys).route)
    });

    g.finish();
}

/// One wake-up as the data path does it per reply: notify, then the waiting side's poll
/// takes the permit (single-thread `LocalNotify` against tokio's `Notify`, which it replaced).
fn bench_wake(c: &mut Criterion) {
    use std::future::Future;
    use std::task::{Context, Waker};
    let mut g = c.benchmark_group("wake");
    g.throughput(Throughput::Elements(1));
    let mut cx = Context::from_waker(Waker::noop());

    let local = slotproxy::local_notify::LocalNotify::new();
    g.bench_function("local_notify", |b| {
        b.iter(|| {
            let mut wait = std::pin::pin!(local.notified());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            local.notify_one();
            assert!(wait.as_mut().poll(&mut cx).is_ready());
        })
    });

    let tokio_notify = tokio::sync::Notify::new();
    g.bench_function("tokio_notify", |b| {
        b.iter(|| {
            let mut wait = std::pin::pin!(tokio_notify.notified());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            tokio_notify.notify_one();
            assert!(wait.as_mut().poll(&mut cx).is_ready());
        })
    });

    g.finish();
}

fn bench_reply_scanner(c: &mut Criterion) {
    let mut g = c.benchmark_group("reply_scanner");
    // 16 bulk replies as a node answers 16 pipelined GETs of 3-byte values (redis-benchmark's
    // default value size).
    let mut replies = BytesMut::new();
    for _ in 0..16 {
        replies.extend_from_slice(b"$3\r\nxxx\r\n");
    }
    let frame_len = replies.len() / 16;
    g.throughput(Throughput::Elements(16));

    // `scan` alone over one shared buffer: the cost of finding frame boundaries.
    let buf: Bytes = replies.clone().freeze();
    g.bench_function("scan_16_bulk", |b| {
        let mut scanner = ReplyScanner::default();
        b.iter(|| {
            let buf = black_box(&buf[..]);
            let mut off = 0;
            while let Some(n) = scanner.scan(&buf[off..]).expect("valid replies") {
                // A finished frame leaves the scanner idle, so the next call starts afresh.
                off += n;
                if off == buf.len() {
                    break;
                }
            }
            debug_assert_eq!(off, frame_len * 16);
            off
        })
    });

    // `next_frame`, as the backend reader uses it: scan and cut each frame off the buffer.
    g.bench_function("next_frame_16_bulk", |b| {
        let mut scanner = ReplyScanner::default();
        b.iter_batched(
            || replies.clone(),
            |mut buf| {
                let mut n = 0;
                while let Some(frame) = scanner.next_frame(&mut buf).expect("valid replies") {
                    black_box(&frame);
                    n += 1;
                }
                n
            },
            BatchSize::SmallInput,
        )
    });

    g.finish();
}

/// A request's reply slot and reply queue: what one unpipelined request takes from the worker
/// thread's pools and gives back (`session::scratch`), beside a fresh slot allocated per
/// request as before the pools.
fn bench_scratch(c: &mut Criterion) {
    use slotproxy::local_notify::LocalNotify;
    use slotproxy::route::dispatch::ReplySlot;
    use slotproxy::session::scratch;
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::rc::Rc;
    let mut g = c.benchmark_group("scratch");
    g.throughput(Throughput::Elements(1));
    let signal = Rc::new(LocalNotify::new());
    let tally = Rc::new(Cell::new(0usize));
    let reply = Bytes::from_static(b"$3\r\nbar\r\n");

    g.bench_function("pooled_slot_and_parked_queue", |b| {
        let (mut queue, mut out) = (VecDeque::new(), VecDeque::new());
        b.iter(|| {
            scratch::unpark(&mut queue, &mut out);
            let slot = scratch::slot(&signal, &tally);
            queue.push_back(Rc::clone(&slot));
            drop(slot);
            if let Some(head) = queue.front() {
                head.fill(reply.clone());
                if let Some(r) = head.take() {
                    out.push_back(black_box(r));
                }
            }
            if let Some(head) = queue.pop_front() {
                scratch::reuse(head);
            }
            out.clear();
            scratch::park(std::mem::take(&mut queue), std::mem::take(&mut out));
        })
    });

    // The design before the pools: each session kept its own spare slots and its queues.
    g.bench_function("session_kept_slot_and_queue", |b| {
        let (mut queue, mut out) = (VecDeque::new(), VecDeque::new());
        let mut spare: Vec<Rc<ReplySlot>> = Vec::new();
        b.iter(|| {
            let slot = spare
                .pop()
                .unwrap_or_else(|| ReplySlot::counted(&signal, &tally));
            queue.push_back(Rc::clone(&slot));
            drop(slot);
            if let Some(head) = queue.front() {
                head.fill(reply.clone());
                if let Some(r) = head.take() {
                    out.push_back(black_box(r));
                }
            }
            if let Some(head) = queue.pop_front() {
                if ReplySlot::recycle(&head) {
                    spare.push(head);
                }
            }
            out.clear();
        })
    });

    g.bench_function("fresh_slot_per_request", |b| {
        let (mut queue, mut out) = (VecDeque::new(), VecDeque::new());
        b.iter(|| {
            let slot = ReplySlot::counted(&signal, &tally);
            queue.push_back(Rc::clone(&slot));
            drop(slot);
            if let Some(head) = queue.front() {
                head.fill(reply.clone());
                if let Some(r) = head.take() {
                    out.push_back(black_box(r));
                }
            }
            queue.pop_front();
            out.clear();
        })
    });

    g.finish();
}

criterion_group!(
    benches,
    bench_scratch,
    bench_parse,
    bench_key_slot,
    bench_route,
    bench_reply_scanner,
    bench_wake
);
criterion_main!(benches);
