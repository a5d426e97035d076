"""Who may use the pool: authentication of every PoolNet session, and the host's decisions.

Installs itself on a ``Coordinator``: every ``hello`` is proven through the ``Authenticator``
(key, pairing code or the owner's approval) and must ask for a role within the device's
permissions (``core.permissions``); the host's own identity alone may approve, deny and revoke
devices, change their permissions and replace the pairing code. A revoked device is cut off at
once: its live connections are closed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from poolnet_desktop.core.permissions import Action, Caller, Permission, may_join
from poolnet_desktop.core.protocol import (
    AccessChanged,
    AccessEntry,
    AccessList,
    ApproveDevice,
    ErrorCode,
    Hello,
    ListAccess,
    NewPairingCode,
    PairingCode,
    ProtocolError,
    RevokeDevice,
    SetPermissions,
)
from poolnet_desktop.runtime.host.coordinator import Coordinator
from poolnet_desktop.runtime.host.session import Session
from poolnet_desktop.runtime.security.auth import Authenticator, AuthRefused, PendingApproval
from poolnet_desktop.runtime.security.trust import ApprovedDevice, TrustStore

log = logging.getLogger(__name__)

CLOSE_REVOKED = 4003


class PoolAccess:
    """Authentication and administration for one coordinator."""

    def __init__(
        self,
        coordinator: Coordinator,
        authenticator: Authenticator,
        store: TrustStore,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.coordinator = coordinator
        self.authenticator = authenticator
        self.store = store
        self._wall = wall_clock
        coordinator.authenticate = self._authenticate
        coordinator.add_handler(ApproveDevice, self._on_approve)
        coordinator.add_handler(RevokeDevice, self._on_revoke)
        coordinator.add_handler(ListAccess, self._on_list)
        coordinator.add_handler(SetPermissions, self._on_set_permissions)
        coordinator.add_handler(NewPairingCode, self._on_new_code)
        # Called (on the loop) whenever the approved devices or their permissions change.
        self.on_devices_changed: Callable[[], None] | None = None

    async def trust_owner(self, device_id: str, name: str, public_key: str) -> None:
        """Approve the host's own identity, so its own member and CLI join without a prompt."""
        if await self.store.approved(device_id) is None:
            await self.store.approve(ApprovedDevice(device_id, name, public_key, self._wall()))
        self.coordinator.owner_id = device_id

    async def revoke(self, device_id: str, reason: str = "", address: str = "") -> bool:
        """Revoke for good and close the device's connections now; True if it was approved."""
        was_approved = await self.authenticator.revoke(device_id, reason=reason, address=address)
        self.coordinator.cut_off(device_id, CLOSE_REVOKED, "revoked by the pool's host")
        self._devices_changed()
        return was_approved

    def pending(self) -> list[PendingApproval]:
        return self.authenticator.pending()

    async def _authenticate(self, session: Session, hello: Hello) -> bool:
        """Prove the peer, then hold it to its permissions: a role it was not given is refused
        (an observer-only device never joins as a member and is never given shards)."""
        try:
            result = await self.authenticator.authenticate(session.connection, hello, session.address)
        except AuthRefused:
            return False
        if result.method != "key":  # newly paired or approved
            self._devices_changed()
        approved = await self.store.approved(hello.device_id)
        session.permissions = approved.permissions if approved is not None else frozenset()
        session.owner = hello.device_id == self.coordinator.owner_id
        refusal = may_join(Caller(hello.device_id, session.permissions, session.owner), hello.role)
        if refusal is None:
            return True
        await self.store.record("refused", at=self._wall(), device_id=hello.device_id, address=session.address,
                                detail=f"{ErrorCode.FORBIDDEN}: {refusal}")
        await session.send_error(ErrorCode.FORBIDDEN, refusal)
        await session.close(1008, "role not permitted")
        return False

    def _require_owner(self, session: Session) -> None:
        session.require(Action.ADMINISTER)

    async def _on_approve(self, session: Session, message: ApproveDevice) -> None:
        self._require_owner(session)
        decide = self.authenticator.deny if message.deny else self.authenticator.approve
        if not decide(message.device_id):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{message.device_id} is not waiting for approval")
        outcome = "denied" if message.deny else "approved"
        await session.send(AccessChanged(device_id=message.device_id, outcome=outcome))

    async def _on_revoke(self, session: Session, message: RevokeDevice) -> None:
        self._require_owner(session)
        if message.device_id == self.coordinator.owner_id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "the host cannot revoke itself")
        was_approved = await self.revoke(message.device_id, message.reason, session.address)
        outcome = "revoked" if was_approved else "revoked (it had never been approved)"
        await session.send(AccessChanged(device_id=message.device_id, outcome=outcome))

    async def set_permission(self, device_id: str, permission: Permission, allow: bool, address: str = "") -> str:
        """Grant or take away one permission of an approved device, audited; its live sessions
        follow at once (one that lost the role it is connected in is cut off; one that lost
        ``submit`` is refused its next task). Returns what was done, in words."""
        if device_id == self.coordinator.owner_id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "the owner holds every permission")
        device = await self.store.approved(device_id)
        if device is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{device_id} is not an approved device")
        permissions = device.permissions | {permission} if allow else device.permissions - {permission}
        await self.store.set_permissions(device_id, permissions)
        outcome = f"{permission} {'granted' if allow else 'taken away'}"
        await self.store.record("permissions", at=self._wall(), device_id=device_id, address=address, detail=outcome)
        live = [p for p in self.coordinator.sessions if p.peer_id == device_id and p.dialect == "poolnet"]
        for peer in live:
            peer.permissions = permissions
        if any(peer.role not in permissions for peer in live):
            self.coordinator.cut_off(device_id, CLOSE_REVOKED, f"{permission} was taken away")
        self._devices_changed()
        return outcome

    def _devices_changed(self) -> None:
        if self.on_devices_changed is not None:
            self.on_devices_changed()

    async def _on_set_permissions(self, session: Session, message: SetPermissions) -> None:
        self._require_owner(session)
        outcome = await self.set_permission(message.device_id, message.permission, message.allow, session.address)
        await session.send(AccessChanged(device_id=message.device_id, outcome=outcome))

    async def _on_new_code(self, session: Session, message: NewPairingCode) -> None:
        self._require_owner(session)
        await session.send(PairingCode(code=self.authenticator.new_pairing_code()))

    async def _on_list(self, session: Session, message: ListAccess) -> None:
        self._require_owner(session)
        approved = await self.store.devices()
        audit = await self.store.audit_log(limit=50)
        await session.send(
            AccessList(
                pairing_code=self.authenticator.pairing_code,
                approved=[
                    AccessEntry(device_id=d.device_id, name=d.name, at=d.approved_at,
                                permissions=sorted(d.permissions))
                    for d in approved
                ],
                pending=[
                    AccessEntry(device_id=p.device_id, name=p.name, address=p.address, at=p.since)
                    for p in self.authenticator.pending()
                ],
                revoked=await self.store.revoked(),
                audit=[
                    AccessEntry(device_id=e.device_id, address=e.address, at=e.time, detail=f"{e.event}: {e.detail}")
                    for e in audit
                ],
            )
        )
