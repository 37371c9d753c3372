//! Choosing a backend, and what only the io_uring backend does: provided receive buffers that
//! run out, sends that hold the queue's chunks until they complete. Every other engine test runs
//! on each backend through `THRONG_BACKEND` (scripts/test runs the suite once per backend).

mod support;

use std::thread;
use std::time::Duration;

use support::{echo_builder, wait_until, Received, TestClient};
use throng::{Backend, DataKind, Server};

/// Whether this kernel runs io_uring (the probe `auto` uses).
fn io_uring_here() -> bool {
    match echo_builder().backend(Backend::IoUring).start() {
        Ok(server) => server.backend() == Backend::IoUring,
        Err(e) => {
            eprintln!("io_uring not available here: {e}");
            false
        }
    }
}

fn echo_round_trips(server: &Server, sizes: &[usize]) {
    let mut client = TestClient::connect(server.local_addr(), "/");
    for (i, &size) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..size).map(|b| (b * 31 + i) as u8).collect();
        client.send_binary(&payload);
        match client.recv() {
            Received::Message(DataKind::Binary, echoed) => {
                assert!(echoed == payload, "message {i} of {size} B came back changed")
            }
            other => panic!("message {i}: {other:?}"),
        }
    }
}

#[test]
fn each_backend_runs_when_asked_and_says_so() {
    let mut backends = vec![Backend::Epoll];
    if io_uring_here() {
        backends.push(Backend::IoUring);
    }
    for backend in backends {
        let server = echo_builder().backend(backend).start().expect("start");
        assert_eq!(server.backend(), backend);
        assert_eq!(server.stats().backend, backend);
        assert!(server.handle().loop_stats().iter().all(|s| s.backend == backend));
        // Small, buffer-sized and large messages: a 4 MiB echo is sent in several sends on
        // both backends (short sends go on from where they stopped).
        echo_round_trips(&server, &[0, 1, 125, 126, 16 * 1024, 65_535, 65_536, 4 << 20, 3]);
    }
}

#[test]
fn auto_resolves_to_a_real_backend() {
    let server = echo_builder().backend(Backend::Auto).start().expect("start");
    assert_ne!(server.backend(), Backend::Auto);
    echo_round_trips(&server, &[5, 70_000]);
}

#[test]
fn the_backend_names_parse_and_print_alike() {
    for backend in [Backend::Auto, Backend::Epoll, Backend::IoUring] {
        assert_eq!(backend.name().parse::<Backend>(), Ok(backend));
        assert_eq!(backend.to_string(), backend.name());
    }
    let err = "kqueue".parse::<Backend>().unwrap_err();
    assert!(err.contains("kqueue") && err.contains("io_uring"), "{err}");
}

/// Two receive buffers for 40 connections that all send at once: receives find the ring
/// empty, are armed again as buffers come back, and every byte still arrives in order.
#[test]
fn io_uring_receives_survive_running_out_of_buffers() {
    if !io_uring_here() {
        return;
    }
    let server = echo_builder().backend(Backend::IoUring).recv_buffers(2, 512).start().expect("start");
    let addr = server.local_addr();
    let mut rounds = 0;
    // Bursts until the ring ran dry at least once (nearly always in the first round).
    while server.stats().recv_buffers_exhausted == 0 && rounds < 20 {
        rounds += 1;
        let clients: Vec<_> = (0..40)
            .map(|c| {
                thread::spawn(move || {
                    let mut client = TestClient::connect(addr, "/");
                    let messages: Vec<Vec<u8>> =
                        (0..8).map(|m| (0..3000).map(|b| (b + m * 7 + c) as u8).collect()).collect();
                    for message in &messages {
                        client.send_binary(message);
                    }
                    for (m, message) in messages.iter().enumerate() {
                        match client.recv() {
                            Received::Message(DataKind::Binary, echoed) => {
                                assert!(&echoed == message, "client {c} message {m}")
                            }
                            other => panic!("client {c} message {m}: {other:?}"),
                        }
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().expect("a client failed");
        }
    }
    assert!(server.stats().recv_buffers_exhausted > 0, "the ring never ran dry in {rounds} rounds");
    // And the loop still serves new connections normally.
    echo_round_trips(&server, &[10, 2000]);
}

/// A registered-file table of two slots: the first connections are named by slot, the later
/// ones by descriptor, and slots freed by closes are filled again by new connections; every one
/// echoes, and each socket is really closed when its connection goes (a peer that half-closes
/// gets the server's FIN only once the table let go of the file as well as the descriptor).
#[test]
fn io_uring_connections_past_the_registered_file_table_use_their_descriptors() {
    if !io_uring_here() {
        return;
    }
    let server = echo_builder().backend(Backend::IoUring).registered_files(2).start().expect("start");
    let addr = server.local_addr();
    let leave = |client: &mut TestClient| {
        client.stream.shutdown(std::net::Shutdown::Write).expect("half-close");
        client.expect_eof();
    };
    for round in 0..3u8 {
        let mut clients: Vec<_> = (0..5).map(|_| TestClient::connect(addr, "/")).collect();
        for (c, client) in clients.iter_mut().enumerate() {
            let text = format!("round {round} client {c}");
            client.send_text(&text);
            assert_eq!(client.recv(), Received::text(&text));
        }
        // The first two leave, freeing the registered slots while the others keep theirs.
        for mut client in clients.drain(..2) {
            leave(&mut client);
        }
        let mut late = TestClient::connect(addr, "/");
        late.send_binary(&[round; 70_000]);
        assert_eq!(late.recv(), Received::binary(&[round; 70_000]));
        for client in clients.iter_mut().chain([&mut late]) {
            leave(client);
        }
        assert!(
            wait_until(Duration::from_secs(10), || server.stats().connections == 0),
            "{:?}",
            server.stats()
        );
    }
}

/// A client that stops reading while the server sends it more than the socket buffers hold:
/// the send stays in flight (holding its chunks) while the queue grows behind it, and closing
/// the connection at the outbound cap cancels it without disturbing another connection.
#[test]
fn a_send_in_flight_to_a_stalled_reader_is_cancelled_at_close() {
    let backend = if io_uring_here() { Backend::IoUring } else { Backend::Epoll };
    let server = echo_builder().backend(backend).max_outbound_bytes(1 << 20).start().expect("start");
    let addr = server.local_addr();
    let mut stalled = TestClient::connect(addr, "/");
    let mut healthy = TestClient::connect(addr, "/");
    // 64 echoes of 256 KiB = 16 MiB queued for a peer that reads nothing: over the 1 MiB cap.
    let big = vec![7u8; 256 << 10];
    for _ in 0..64 {
        if stalled.try_send_binary(&big).is_err() {
            break; // The server closed it: the cap was reached.
        }
    }
    assert!(
        wait_until(Duration::from_secs(10), || server.stats().slow_consumer_closes == 1),
        "the stalled reader was not closed at its cap: {:?}",
        server.stats()
    );
    healthy.send_text("still here");
    assert_eq!(healthy.recv(), Received::text("still here"));
    assert!(wait_until(Duration::from_secs(10), || server.stats().connections == 1), "{:?}", server.stats());
}
