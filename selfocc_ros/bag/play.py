"""Replay a rosbag2 into ROS 2 with its recorded timing and a /clock topic (like `ros2 bag play --clock`).

Messages are read with `rosbags` and published as the recorded CDR bytes through rclpy's raw
publishing (`Publisher.publish(bytes)`), so no field-by-field conversion is needed; rclpy only
needs the message *type* for each topic (``sensor_msgs.msg.Image`` ...). Topics whose Python
message package is not importable are skipped with a warning: tf2_msgs is not a PyPI wheel,
build the stand-in with ``eval "$(bash tools/build_msgs.sh)"`` to replay /tf and /tf_static.

Topics recorded with transient_local durability (/tf_static) are published latched, and their
messages before ``--start-offset`` are still sent at start, so late subscribers get them.

    selfocc bag play BAG [--rate R] [--loop] [--topics T ...] [--start-offset S] [--clock-hz H]
    ros2 run selfocc_ros bag_player BAG ...
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


def add_play_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", help="rosbag2 folder (metadata.yaml) or .mcap/.db3 file")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="replay from the start when the bag ends")
    p.add_argument("--topics", nargs="+", default=None, help="only these topics (/clock is always published)")
    p.add_argument("--start-offset", type=float, default=0.0, help="seconds into the bag to start from")
    p.add_argument("--clock-hz", type=float, default=100.0, help="/clock publish rate in wall Hz (0 = no /clock)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait after creating publishers")
    p.add_argument("--ack-timeout", type=float, default=5.0,
                   help="seconds to wait at the end for reliable subscribers to acknowledge everything")
    p.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="TIMEOUT",
                   help="wait up to TIMEOUT s until every volatile topic has a subscriber (for scripted runs)")


def msg_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> the rclpy message class (ImportError/AttributeError if missing)."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def _qos_for(conn_qos: list, latched: bool = False):
    """rclpy QoS matching the recorded offer: transient_local stays latched (depth 1)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    latched = latched or any(getattr(q.durability, "name", "") == "TRANSIENT_LOCAL" for q in conn_qos)
    best_effort = conn_qos and all(getattr(q.reliability, "name", "") == "BEST_EFFORT" for q in conn_qos)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1 if latched else 10,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    ), latched


class BagPlayer:
    """Publishes a bag's messages on their topics at the recorded pace (scaled by `rate`)."""

    def __init__(self, node, bag: str | Path, rate: float = 1.0, topics=None, start_offset: float = 0.0,
                 clock_hz: float = 100.0):
        from rosbags.rosbag2 import Reader

        from selfocc_core.data.rosbag import open_bag

        if rate <= 0:
            raise ValueError(f"--rate must be > 0, got {rate}")
        self.node, self.bag, self.rate = node, Path(bag), float(rate)
        self.clock_hz = float(clock_hz)
        self.source = open_bag(self.bag)
        qos_by_topic: dict[str, list] = {}
        if isinstance(getattr(self.source, "reader", None), Reader):
            for c in self.source.reader.connections:
                qos_by_topic.setdefault(c.topic, []).extend(getattr(c.ext, "offered_qos_profiles", []) or [])
        wanted = set(topics) if topics else None
        if wanted:
            unknown = wanted - set(self.source.topics)
            if unknown:
                log.warning("topics not in %s: %s", self.bag, sorted(unknown))
        self.publishers: dict[str, object] = {}
        self.latched: set[str] = set()
        for topic, msgtype in sorted(self.source.topics.items()):
            if wanted is not None and topic not in wanted:
                continue
            try:
                cls = msg_class(msgtype)
            except (ImportError, AttributeError, ValueError):
                hint = ' (build it: eval "$(bash tools/build_msgs.sh)")' if msgtype.startswith("tf2_msgs/") else ""
                log.warning("skipping %s: message type %s is not importable here%s", topic, msgtype, hint)
                continue
            # /tf_static is latched by definition, whatever a foreign recorder wrote down.
            qos, latched = _qos_for(qos_by_topic.get(topic, []), latched=topic == "/tf_static")
            self.publishers[topic] = node.create_publisher(cls, topic, qos)
            if latched:
                self.latched.add(topic)
        self.clock_pub = None
        if self.clock_hz > 0:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = node.create_publisher(Clock, "/clock", 10)
        self.start_offset_ns = int(start_offset * 1e9)
        self.published = 0

    def wait_for_subscribers(self, timeout: float, should_stop=lambda: False) -> bool:
        """Block until every volatile publisher (and /clock) has a subscription (or `timeout` s). True if they all do."""
        end = time.monotonic() + timeout
        pubs = [p for t, p in self.publishers.items() if t not in self.latched]
        if self.clock_pub is not None:
            pubs.append(self.clock_pub)
        while time.monotonic() < end and not should_stop():
            if all(p.get_subscription_count() > 0 for p in pubs):
                return True
            time.sleep(0.05)
        return False

    def wait_for_all_acked(self, timeout: float, should_stop=lambda: False) -> bool:
        """Wait until reliable subscribers acknowledged everything published (True if they did).

        Waits in slices of 0.1 s so that ``should_stop`` (a signal) ends it promptly."""
        from rclpy.duration import Duration

        end = time.monotonic() + timeout
        ok = True
        for pub in [*self.publishers.values(), self.clock_pub]:
            if pub is None or pub.get_subscription_count() == 0:
                continue
            while True:
                left = end - time.monotonic()
                if should_stop():
                    return False
                if pub.wait_for_all_acked(Duration(nanoseconds=int(max(0.0, min(left, 0.1)) * 1e9))):
                    break
                if left <= 0.1:
                    ok = False
                    break
        return ok

    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_pub is None:
            return
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = int(bag_ns // 1_000_000_000), int(bag_ns % 1_000_000_000)
        self.clock_pub.publish(msg)

    def play_once(self, should_stop=lambda: False) -> int:
        """One pass over the bag. Returns the number of messages published."""
        first_ns = None
        wall0 = None
        next_clock = 0.0
        count = 0
        period = 1.0 / self.clock_hz if self.clock_hz > 0 else None
        for topic, t, raw in self.source.messages():
            if should_stop():
                break
            pub = self.publishers.get(topic)
            if pub is None:
                continue
            if first_ns is None:
                first_ns = t
                start_ns = first_ns + self.start_offset_ns
            if t < start_ns:
                if topic in self.latched:  # still deliver latched state (e.g. /tf_static)
                    pub.publish(bytes(raw))
                    count += 1
                continue
            if wall0 is None:
                wall0 = time.monotonic()
                self._publish_clock(start_ns)
                next_clock = wall0 + (period or 0)
            due = wall0 + (t - start_ns) / 1e9 / self.rate
            while True:
                now = time.monotonic()
                if now >= due:
                    break
                if period is not None and now >= next_clock:
                    # strictly before `due`, so this clock value is below the next message's stamp
                    self._publish_clock(start_ns + int((now - wall0) * self.rate * 1e9))
                    next_clock = max(next_clock + period, now)
                    continue
                wait = due - now if period is None else min(due - now, next_clock - now)
                time.sleep(max(0.0, min(wait, 0.05)))
            if period is not None:
                self._publish_clock(t)  # the clock never lags a published message
            pub.publish(bytes(raw))
            count += 1
        self.published += count
        return count

    def close(self) -> None:
        self.source.close()


def play_from_args(args: argparse.Namespace, ros_args: list[str] | None = None) -> int:
    """Run the player for parsed `add_play_arguments` args; returns an exit code."""
    import rclpy
    from rclpy.node import Node

    from rclpy.signals import SignalHandlerOptions

    from selfocc_ros.shutdown import ShutdownRequest

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # SIGINT/SIGTERM only set a flag that the loops below check (selfocc_ros/shutdown.py): no
    # KeyboardInterrupt traceback, the context stays valid until the player is closed, exit 0.
    stop = ShutdownRequest().install()
    rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
    stop.mark_ready()
    node = None
    player = None
    try:
        node = Node("bag_player")
        try:
            player = BagPlayer(node, args.bag, rate=args.rate, topics=args.topics, start_offset=args.start_offset,
                               clock_hz=args.clock_hz)
        except (FileNotFoundError, ValueError) as e:
            print(f"bag play: error: {e}", file=sys.stderr)
            return 1
        if not player.publishers:
            print(f"bag play: error: nothing to publish from {args.bag}", file=sys.stderr)
            return 1
        if args.wait_for_subscribers > 0 and not player.wait_for_subscribers(args.wait_for_subscribers, stop.requested):
            log.warning("not every topic has a subscriber after %.1f s; playing anyway", args.wait_for_subscribers)
        if args.delay > 0 and stop.wait(args.delay):
            return 0
        log.info("playing %s: %d topics at rate %.2f%s", args.bag, len(player.publishers), args.rate,
                 " (loop)" if args.loop else "")
        while True:
            n = player.play_once(should_stop=lambda: stop.requested() or not rclpy.ok())
            log.info("published %d messages", n)
            if not args.loop or stop.requested() or not rclpy.ok():
                break
        if stop.requested():
            log.info("stopped (%s)", stop.describe())
            return 0
        # Like `ros2 bag play --wait-for-all-acked`: reliable subscribers get the tail of the
        # bag even when their data channel came up late (a participant that exits drops them).
        if not player.wait_for_all_acked(args.ack_timeout, stop.requested) and not stop.requested():
            log.warning("not every message was acknowledged within %.1f s", args.ack_timeout)
        return 0
    finally:
        if player is not None:
            player.close()
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `bag_player` / `selfocc_bag_player` (ROS arguments are passed to rclpy)."""
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(prog="bag_player", description=__doc__.splitlines()[0])
    add_play_arguments(parser)
    args = parser.parse_args(remove_ros_args(argv)[1:])
    status = play_from_args(args, ros_args=argv)
    from selfocc_ros.shutdown import exit_now

    exit_now(status)  # everything is closed: skip the interpreter's slow finalization (see shutdown.py)


if __name__ == "__main__":
    sys.exit(main())
