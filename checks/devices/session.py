"""One device's poll: TCP connect on the event loop, then login and commands with netmiko in
a thread, all within the device's deadline; every failure becomes a reason in the result."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any

from wardready.checks.base import DeviceTarget
from wardready.checks.devices.config import Config
from wardready.checks.devices.credentials import Credentials, env_name
from wardready.checks.devices.linux import LINUX_COMMAND, LINUX_END, parse_linux
from wardready.checks.devices.recipes import RECIPES, parse_outputs
from wardready.checks.devices.result import MAX_INTERFACES, DevicePoll, Facts
from wardready.core.errors import PollError, PollReason

# Log lines name the check (wardready.checks.devices), as before its modules were split.
log = logging.getLogger(__package__)

MAX_ERROR_CHARS = 200


async def poll(device: DeviceTarget, login: Credentials | None, config: Config) -> DevicePoll:
    """Poll one device; never raises (except on cancellation): failures are in the result."""
    started = time.perf_counter()
    holder: list[socket.socket] = []
    facts: Facts | None = None
    reason: PollReason | None = None
    error: str | None = None
    try:
        if device.device_type not in RECIPES and device.device_type != "linux":
            raise PollError("unsupported", f"no recipe for device type {device.device_type!r}")
        if login is None:
            raise PollError("no-credentials", f"no credentials for {device.name} (set "
                            f"{env_name(device.name)}USERNAME/PASSWORD or credentials_file)")
        facts = await asyncio.wait_for(_connect_and_poll(device, login, config, holder),
                                       config.device_timeout_seconds)
    except TimeoutError:
        reason = "timeout"
        error = f"no complete answer within {config.device_timeout_seconds:g} s"
    except PollError as exc:
        reason, error = exc.reason, str(exc)
    except Exception as exc:  # whatever else goes wrong stays with this device
        reason, error = "protocol", type(exc).__name__
    finally:
        for sock in holder:
            # Ends a netmiko thread still blocked on this device: its reads fail at once.
            _abort(sock)
    duration = time.perf_counter() - started
    if error is not None and login is not None:
        error = _scrub(error, login)
    if reason is not None:
        log.info("device %s: %s", device.name, reason)
    base = dict(name=device.name, address=device.address, device_type=device.device_type,
                role=device.role, duration_seconds=duration)
    if facts is None:
        return DevicePoll(**base, up=False, reason=reason, error=error)
    kept = facts.interfaces[:MAX_INTERFACES]
    return DevicePoll(**base, **{**vars(facts), "interfaces": kept}, up=True,
                      interfaces_dropped=len(facts.interfaces) - len(kept))


async def _connect_and_poll(device: DeviceTarget, login: Credentials, config: Config,
                            holder: list[socket.socket]) -> Facts:
    sock = await _connect(device, config.connect_timeout_seconds)
    holder.append(sock)
    return await asyncio.to_thread(_session, sock, device, login, config)


async def _connect(device: DeviceTarget, timeout: float) -> socket.socket:
    """TCP connect on the event loop, so refusal and unreachability are told apart cleanly
    and the socket is ours to abort when the deadline passes."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(device.address, device.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise PollError("unreachable", f"cannot resolve {device.address}: "
                        f"{exc.strerror}") from None
    error: PollError | None = None
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, sockaddr)
        except TimeoutError:
            sock.close()
            error = PollError("timeout", f"TCP connect to {device.address}:{device.port} "
                              f"timed out after {timeout:g} s")
            continue
        except ConnectionRefusedError:
            sock.close()
            error = PollError("refused", f"connection refused by {device.address}:{device.port}")
            continue
        except OSError as exc:
            sock.close()
            error = PollError("unreachable", f"{device.address}:{device.port}: "
                              f"{os.strerror(exc.errno) if exc.errno else type(exc).__name__}")
            continue
        except BaseException:
            sock.close()
            raise
        sock.setblocking(True)
        return sock
    raise error or PollError("unreachable", f"{device.address} has no address")


def _session(sock: socket.socket, device: DeviceTarget, login: Credentials,
             config: Config) -> Facts:
    """Log in, run the recipe's commands and parse them (blocking: runs in a thread)."""
    # Lazy: netmiko and paramiko cost ~35 MiB, and most wards have no devices in the inventory.
    from netmiko import ConnectHandler
    from netmiko.exceptions import (
        NetmikoAuthenticationException,
        NetmikoTimeoutException,
        ReadTimeout,
    )

    # netmiko's own timeouts all fit in the device's deadline, so the thread ends by itself.
    timeouts = dict(conn_timeout=config.connect_timeout_seconds,
                    banner_timeout=config.banner_timeout_seconds,
                    auth_timeout=config.auth_timeout_seconds,
                    blocking_timeout=config.read_timeout_seconds,
                    session_timeout=config.device_timeout_seconds,
                    read_timeout_override=config.read_timeout_seconds)
    pinning: dict[str, Any] = {}
    if config.known_hosts_file is not None:
        pinning = dict(ssh_strict=True, system_host_keys=False, alt_host_keys=True,
                       alt_key_file=str(config.known_hosts_file))
    try:
        conn = ConnectHandler(
            device_type=device.device_type, host=device.address, port=device.port,
            username=login.username, password=login.password, secret=login.secret,
            sock=sock, use_keys=False, allow_agent=False, **timeouts, **pinning)
    except NetmikoAuthenticationException:
        raise PollError("auth", f"{device.address}:{device.port} rejected the login of "
                        f"{login.username!r}") from None
    except NetmikoTimeoutException as exc:
        if any(s in str(exc) for s in ("known_hosts", "does not match")):
            raise PollError("host-key", f"{device.address}:{device.port} presented a host key "
                            f"not in {config.known_hosts_file}") from None
        # paramiko gives up either reading the banner or, when its connect timeout ends
        # first, waiting for the key exchange ("No existing session"): both a silent peer.
        if any(s in str(exc).lower() for s in ("banner", "no existing session")):
            raise PollError("timeout", f"{device.address}:{device.port} completed no SSH "
                            f"handshake within {config.banner_timeout_seconds:g} s") from None
        raise PollError("protocol", "SSH negotiation failed") from None
    except ReadTimeout:
        raise PollError("timeout", "no prompt after login") from None
    except (OSError, EOFError) as exc:
        raise PollError("protocol", f"SSH session failed: {type(exc).__name__}") from None
    try:
        if device.device_type == "linux":
            return parse_linux(str(conn.send_command(
                LINUX_COMMAND, expect_string=LINUX_END, read_timeout=config.read_timeout_seconds)))
        recipe = RECIPES[device.device_type]
        if recipe.enable and not conn.check_enable_mode():
            conn.enable()
        outputs = {command: str(conn.send_command(command,
                                                  read_timeout=config.read_timeout_seconds))
                   for command in (*recipe.facts, *recipe.interfaces, *recipe.extras)}
        return parse_outputs(recipe, outputs)
    except ReadTimeout:
        raise PollError("timeout", "a command's output did not end within "
                        f"{config.read_timeout_seconds:g} s") from None
    except (OSError, EOFError) as exc:
        raise PollError("protocol", f"SSH session failed: {type(exc).__name__}") from None
    finally:
        try:
            conn.disconnect()
        except Exception:  # the peer may be gone already; the socket is closed regardless
            log.debug("device %s: disconnect failed", device.name)


def _abort(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # not connected any more
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _scrub(text: str, login: Credentials) -> str:
    """Belt and braces: whatever a peer or library echoed, no secret leaves in an error."""
    for secret in (login.password, login.secret):
        if secret:
            text = text.replace(secret, "********")
    return text[:MAX_ERROR_CHARS]
