"""Who may command: a From header proves nothing on its own.

A mail counts as the owner's when it has exactly one From header naming
exactly one well-formed address, that address is one of `[owner] addresses`
(the secret command address or an owner-answer token got it here), and —
where configured — a proof of origin holds:

- `[owner] trusted_authserv_id`: the topmost Authentication-Results header
  *from that authserv-id* reports dkim=pass or dmarc=pass aligned with the
  From domain. Headers from anyone else are ignored: anybody can write one.
  Only a mail server in front of ordermail can write that header for us —
  Postfix with OpenDKIM/OpenDMARC before the LMTP door or the pipe, or the
  provider of a mailbox read by IMAP, each of which adds its own on top (and
  should strip such headers arriving from outside, as RFC 8601 section 5
  asks). Mail taken by ordermail's own SMTP listener came straight from the
  sender, who wrote every header in it: there no Authentication-Results
  header counts, whoever it names.
- `[owner] verify_dkim`: a DKIM signature of the From domain verifies
  (dkimpy), with the public key from DNS or pinned in `[owner] dkim_keys_file`.

When both are configured either proof suffices; when neither is, the secret
address and the From address are the whole check. Several From headers, or
one with several addresses, are refused outright: a mail client writes one,
and a DKIM signature covers the bottom one while a reader may take the top.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32, default
from pathlib import Path

import authres
import dkim

log = logging.getLogger("ordermail.owner")
# Doors where ordermail itself is the receiving mail server: nobody in front
# of it wrote (or stripped) an Authentication-Results header.
SELF_RECEIVED_CHANNELS = frozenset({"smtp"})
HEADER_WINDOW = 262_144   # From is looked for in this much of the message


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def check_owner(mail, raw: bytes, settings, channel: str) -> Verdict:
    """Whether a mail that came by `channel` (smtp, lmtp, imap, pipe) is the owner's."""
    owner = settings.owner
    sender = mail.from_address
    if not sender or not owner.is_owner_address(sender):
        return Verdict(False, f"From {sender or '(none)'} is not an owner address")
    problem = _from_problem(raw, sender)
    if problem:
        return Verdict(False, problem)
    domain = sender.rpartition("@")[2]
    proofs = []
    if owner.trusted_authserv_id:
        if channel in SELF_RECEIVED_CHANNELS:
            proofs.append((False, f"taken by SMTP directly, so no Authentication-Results header can vouch "
                                  f"for it (the sender wrote them all, {owner.trusted_authserv_id}'s too)"))
        else:
            proofs.append(_vouched(mail.authentication_results, owner.trusted_authserv_id, domain))
    if owner.verify_dkim:
        proofs.append(_dkim_verified(raw, domain, owner.dkim_keys_file))
    if not proofs:
        return Verdict(True, f"owner address {sender}")
    passed = [reason for ok, reason in proofs if ok]
    if passed:
        return Verdict(True, f"owner address {sender}, {passed[0]}")
    return Verdict(False, "; ".join(reason for _, reason in proofs))


def _from_problem(raw: bytes, sender: str) -> str:
    """Why the From header does not name `sender` alone and unambiguously ("" when it does).

    Read again here, strictly (RFC 5322, email's own parser): the everyday
    parse is lenient and takes the first address of a list, or the one in
    angle brackets of `<owner@shop.example>@evil.example`.
    """
    head = BytesHeaderParser(policy=compat32).parsebytes(raw[:HEADER_WINDOW])
    values = head.get_all("From") or []
    if len(values) != 1:
        return f"{len(values)} From headers (a command mail has exactly one)"
    try:
        header = default.header_factory("From", _unfolded(str(values[0])))
        addresses, defects = header.addresses, header.defects
        grouped = any(group.display_name is not None for group in header.groups)
    except Exception:       # the parser's own errors on a header it cannot read
        return "the From header cannot be read"
    if grouped:
        return "the From header is a group (a command mail names one address)"
    if len(addresses) != 1:
        return f"the From header names {len(addresses)} addresses (a command mail names exactly one)"
    if defects or addresses[0].addr_spec.lower() != sender:
        return "the From header is malformed (its address is not plainly the owner's)"
    return ""


def _unfolded(value: str) -> str:
    """A header's value on one line (RFC 5322 2.2.3: a line break before white space is folding)."""
    return re.sub(r"\r?\n(?=[ \t])", "", value)


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
