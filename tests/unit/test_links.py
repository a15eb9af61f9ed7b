"""Links between processes (links.py), both ends in this process: frames,
descriptors passed alongside, the end of a link, and the outbox that keeps
batches until they are acknowledged."""

import socket

import pytest

from binance_streamer import links, messages


def _pair():
    a, b = links.pair()
    return links.Link(a, "a"), links.Link(b, "b")


def _receive_all(sender, receiver, n):
    """Pump both ends until ``n`` messages arrived (sender flushes as the socket frees)."""
    got = []
    for _ in range(10_000):
        ready, writable = links.wait([receiver], [sender] if sender.pending else [], 1.0)
        if writable:
            sender.flush()
        if ready:
            got += receiver.receive()
        if len(got) >= n:
            return got
    raise AssertionError(f"only {len(got)} of {n} messages arrived")


def test_messages_larger_than_the_socket_buffer_arrive_whole_and_in_order():
    a, b = _pair()
    big = "x" * 6_000_000
    for i in range(4):
        assert a.send(messages.Batch(i, [big]))
    assert a.pending > 0                 # the socket did not take it all: nothing blocked
    got = _receive_all(a, b, 4)
    assert [m.seq for m in got] == [0, 1, 2, 3] and all(m.items == [big] for m in got)
    assert a.pending == 0


def test_a_frame_is_its_length_then_its_pickle():
    import pickle
    import struct
    msg = messages.Batch(7, ["x" * 100_000, 3])
    data = links.frame(msg)
    (size,) = struct.unpack_from("!I", data)
    assert size == len(data) - 4 and pickle.loads(bytes(data)[4:]) == msg


def test_a_descriptor_travels_with_its_attach_message():
    a, b = _pair()
    mine, theirs = links.pair()
    a.send(messages.Attach("writer"), socks=[theirs])
    assert theirs.fileno() == -1         # the sender's copy is closed once sent
    assert _receive_all(a, b, 1) == [messages.Attach("writer")]
    passed = links.from_fd(b.take_fd(), "writer")
    links.Link(mine, "mine").send(("hello",))
    assert _receive_all(passed, passed, 1) == [("hello",)]


def test_the_end_of_a_link_comes_after_the_messages_before_it():
    a, b = _pair()
    a.send(("last words",))
    a.close()
    assert b.receive() == [("last words",)]
    with pytest.raises(links.Broken, match="closed"):
        b.receive()
    assert b.closed and not a.send(("too late",))


def test_a_torn_frame_breaks_the_link_instead_of_the_process():
    a, b = links.pair()
    a.sendall(b"\x00\x00\x00\x05abcde")          # a length, then bytes that are no pickle
    with pytest.raises(links.Broken, match="does not decode"):
        links.Link(b, "b").receive()
    a.close()


def test_an_impossible_length_is_a_torn_stream():
    a, b = links.pair()
    a.sendall(b"\xff\xff\xff\xff")
    with pytest.raises(links.Broken, match="torn"):
        links.Link(b, "b").receive()
    a.close()


def test_the_outbox_keeps_batches_until_acknowledged_and_counts_their_bytes():
    box = links.Outbox(limit=1000)
    for i in range(3):
        box.add(lambda seq: messages.Batch(seq, ["r" * 300]))
    assert [seq for seq, _ in box.frames] == [1, 2, 3] and box.full
    box.ack(2)
    assert [seq for seq, _ in box.frames] == [3] and not box.full
    box.ack(1)                                  # an old acknowledgement changes nothing
    assert [seq for seq, _ in box.frames] == [3] and box.bytes == len(box.frames[0][1])


def test_a_full_outbox_wakes_its_waiter_when_an_ack_makes_room():
    import threading
    box = links.Outbox(limit=500)
    for _ in range(2):
        box.add(lambda seq: messages.Batch(seq, ["r" * 300]))
    still_full = []
    waiter = threading.Thread(target=lambda: still_full.append(box.wait_room(30.0)))
    waiter.start()
    box.ack(1)                                  # room: the waiter returns long before its 30 s
    waiter.join(10.0)
    assert not waiter.is_alive() and still_full == [False]
    box.add(lambda seq: messages.Batch(seq, ["r" * 300]))
    assert box.full and box.wait_room(0.001)    # no Ack: still full after the wait


def test_a_new_consumer_gets_every_unacknowledged_batch_again_in_order():
    producer = links.Producer(10**7, messages.Batch)
    producer.send(["before any consumer"])     # kept while nobody is linked
    first, first_end = _pair()
    assert producer.attach(first) == 1
    producer.send(["second"])
    producer.send(["third"])
    got = _receive_all(first, first_end, 3)
    assert [m.items for m in got] == [["before any consumer"], ["second"], ["third"]]
    producer.outbox.ack(got[0].seq)            # the first consumer wrote only the first batch, then died
    first_end.close()
    second, second_end = _pair()
    assert producer.attach(second) == 2
    assert first.closed
    assert [(m.seq, m.items) for m in _receive_all(second, second_end, 2)] == [(2, ["second"]), (3, ["third"])]


def test_a_send_that_leaves_bytes_behind_wakes_the_flusher():
    waker = links.Waker()
    a, b = links.pair()
    link = links.Link(a, "a", on_pending=waker)
    link.send("x" * 20_000_000)         # more than a socket buffer holds
    ready, _ = links.wait([waker], [], 0)
    assert ready == [waker]
    waker.clear()
    assert links.wait([waker], [], 0) == ([], [])
    b.close()


def test_a_log_record_goes_to_the_manager_and_a_deaf_manager_costs_bounded_memory():
    import logging
    a, b = _pair()
    handler = links.LinkLogHandler(a, messages.Log)
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "gap %s", ("here",), None)
    handler.handle(record)
    (msg,) = _receive_all(a, b, 1)
    assert isinstance(msg, messages.Log) and msg.record.getMessage() == "gap here"
    big = logging.LogRecord("x", logging.WARNING, __file__, 1, "y" * 100_000, None, None)
    for _ in range(200):                        # nobody reads b
        handler.handle(big)
    assert handler.dropped > 0 and a.pending <= links.LinkLogHandler.LIMIT + 200_000
    socket.socket.close(b.sock)
