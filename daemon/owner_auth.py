"""Who may command: a From header proves nothing on its own.

A mail counts as the owner's when its From is one of `[owner] addresses`
(the secret command address or an owner-answer token got it here), and —
where configured — a proof of origin holds:

- `[owner] trusted_authserv_id`: the topmost Authentication-Results header
  *from that authserv-id* reports dkim=pass or dmarc=pass aligned with the
  From domain. Headers from anyone else are ignored: anybody can write one.
- `[owner] verify_dkim`: a DKIM signature of the From domain verifies
  (dkimpy), with the public key from DNS or pinned in `[owner] dkim_keys_file`.

When both are configured either proof suffices; when neither is, the secret
address and the From address are the whole check.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import authres
import dkim

log = logging.getLogger("ordermail.owner")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def check_owner(mail, raw: bytes, settings) -> Verdict:
    owner = settings.owner
    sender = mail.from_address
    if not sender or not owner.is_owner_address(sender):
        return Verdict(False, f"From {sender or '(none)'} is not an owner address")
    domain = sender.rpartition("@")[2]
    proofs = []
    if owner.trusted_authserv_id:
        proofs.append(_vouched(mail.authentication_results, owner.trusted_authserv_id, domain))
    if owner.verify_dkim:
        proofs.append(_dkim_verified(raw, domain, owner.dkim_keys_file))
    if not proofs:
        return Verdict(True, f"owner address {sender}")
    passed = [reason for ok, reason in proofs if ok]
    if passed:
        return Verdict(True, f"owner address {sender}, {passed[0]}")
    return Verdict(False, "; ".join(reason for _, reason in proofs))


def aligned(domain: str, signer: str) -> bool:
    """Relaxed alignment: the same domain, or the From domain under the signer's."""
    domain, signer = domain.lower().rstrip("."), signer.lower().rstrip(".")
    return bool(signer) and (domain == signer or domain.endswith("." + signer))


def _vouched(headers: tuple[str, ...], authserv_id: str, domain: str) -> tuple[bool, str]:
    for value in headers:
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(value)
        except Exception:   # authres raises several types for malformed headers
            continue
        if parsed.authserv_id.lower() != authserv_id.lower():
            continue
        for result in parsed.results:
            if result.result == "pass" and _result_domain(result) and aligned(domain, _result_domain(result)):
                return True, f"{result.method}=pass by {authserv_id}"
        return False, f"{authserv_id} reports no aligned dkim or dmarc pass for {domain}"
    return False, f"no Authentication-Results from {authserv_id}"


def _result_domain(result) -> str:
    wanted = {"dkim": ("header", "d"), "dmarc": ("header", "from")}.get(result.method)
    for prop in result.properties if wanted else ():
        if (prop.type, prop.name) == wanted:
            return prop.value or ""
    return ""


def _dkim_verified(raw: bytes, domain: str, keys_file: str) -> tuple[bool, str]:
    dnsfunc = _pinned_keys(keys_file) if keys_file else dkim.dnsplug.get_txt
    try:
        verifier = dkim.DKIM(raw, minkey=1024)
        for index in range(len(_signatures(raw))):
            if verifier.verify(idx=index, dnsfunc=dnsfunc):
                signer = verifier.domain.decode("ascii", "replace") if verifier.domain else ""
                if aligned(domain, signer):
                    return True, f"DKIM signature of {signer} verified"
    except Exception as exc:   # dkimpy raises its own and parsing errors alike
        log.info("DKIM verification failed: %s", exc)
    return False, f"no valid DKIM signature of {domain}"


def _signatures(raw: bytes) -> list[bytes]:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return [line for line in head.splitlines() if line.lower().startswith(b"dkim-signature:")]


def _pinned_keys(path: str):
    """Keys from a file of lines 'selector._domainkey.example.org v=DKIM1; k=rsa; p=…'."""
    table = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        name, _, record = line.strip().partition(" ")
        if name and not name.startswith("#"):
            table[name.rstrip(".").lower() + "."] = record.strip().encode("ascii")

    def lookup(name: bytes, timeout: int = 5):
        return table.get(name.decode("ascii").lower().rstrip(".") + ".")
    return lookup
