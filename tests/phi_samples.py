"""Patient-data messages built in code, for the outbound tests and bench/outbound.py.

Every identifier is made to pass its issuer's rules (the SSN rules, the MBI alphabet, the
ICD-10-CM code set), so a detector that validates must still find them; the people are
invented. ``generated`` makes a varied set: identifier formats and separators, where the
data sits (plain or HTML body, PDF, Word, Excel, CSV, text, a zip), and the language of
the surrounding text.
"""
from __future__ import annotations

import io
import random
import zipfile
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Callable

from filetype_samples import real_pdf

FIRST = ["Jane", "John", "Maria", "Ahmed", "Li", "Olga", "Carlos", "Aisha", "Peter", "Grace", "Tomas", "Fatima"]
LAST = ["Roe", "Doe", "Garcia", "Khan", "Wei", "Petrova", "Mendez", "Okafor", "Schmidt", "Nguyen", "Novak", "Haddad"]
# Real ICD-10-CM codes with their names (checked against the code set by the tests).
ICD = [
    ("F32.9", "Major depressive disorder, single episode, unspecified"),
    ("F41.1", "Generalized anxiety disorder"),
    ("F43.10", "Post-traumatic stress disorder, unspecified"),
    ("F33.1", "Major depressive disorder, recurrent, moderate"),
    ("F90.0", "Attention-deficit hyperactivity disorder, predominantly inattentive type"),
    ("F11.20", "Opioid dependence, uncomplicated"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("I10", "Essential (primary) hypertension"),
    ("F31.81", "Bipolar II disorder"),
    ("J45.909", "Unspecified asthma, uncomplicated"),
]
MEDS = ["sertraline 50 mg", "bupropion XL 150 mg", "quetiapine 25 mg", "buprenorphine/naloxone", "lithium carbonate"]
MBI_LETTERS = "ACDEFGHJKMNPQRTUVWXY"


def ssn(rng: random.Random, sep: str = "-") -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}{sep}{rng.randint(1, 99):02d}{sep}{rng.randint(1, 9999):04d}"


def mbi(rng: random.Random, dashes: bool = False) -> str:
    a, n = MBI_LETTERS, "0123456789"
    an = a + n
    chars = [rng.choice("123456789"), rng.choice(a), rng.choice(an), rng.choice(n), rng.choice(a),
             rng.choice(an), rng.choice(n), rng.choice(a), rng.choice(a), rng.choice(n), rng.choice(n)]
    text = "".join(chars)
    return f"{text[:4]}-{text[4:7]}-{text[7:]}" if dashes else text


def member_id(rng: random.Random) -> str:
    shapes: list[Callable[[], str]] = [
        lambda: "XYZ" + "".join(rng.choice("0123456789") for _ in range(9)),
        lambda: "W" + "".join(rng.choice("0123456789") for _ in range(9)),
        lambda: "".join(rng.choice("0123456789") for _ in range(11)),
        lambda: "MCD" + "".join(rng.choice("0123456789") for _ in range(8)) + "01",
    ]
    return rng.choice(shapes)()


MONTHS = {
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"],
    "es": ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre", "octubre",
           "noviembre", "diciembre"],
}


def dob(rng: random.Random, lang: str = "en") -> str:
    y, m, d = rng.randint(1935, 2015), rng.randint(1, 12), rng.randint(1, 28)
    forms = [f"{m:02d}/{d:02d}/{y}", f"{y}-{m:02d}-{d:02d}", f"{m}/{d}/{y % 100:02d}", f"{d:02d}.{m:02d}.{y}"]
    if lang == "es":
        forms.append(f"{d} de {MONTHS['es'][m - 1]} de {y}")
    else:
        forms.append(f"{MONTHS['en'][m - 1]} {d}, {y}")
    return rng.choice(forms)


LABELS = {
    "en": {"dob": "DOB", "ssn": "SSN", "member": "Member ID", "mbi": "Medicare MBI", "dx": "Diagnosis",
           "intro": "Please find the patient records below for the referral we discussed.",
           "outro": "Let me know if you need anything else. Thanks!"},
    "es": {"dob": "Fecha de nacimiento", "ssn": "SSN", "member": "Member ID", "mbi": "Medicare MBI",
           "dx": "Diagnóstico", "intro": "Le envío los datos del paciente para la remisión que hablamos.",
           "outro": "Quedo atento a cualquier pregunta. Saludos."},
    "de": {"dob": "Geburtsdatum", "ssn": "SSN", "member": "Member ID", "mbi": "Medicare MBI", "dx": "Diagnose",
           "intro": "anbei die Angaben zur Patientin für die Überweisung, wie besprochen.",
           "outro": "Bei Fragen melden Sie sich gern. Viele Grüße"},
    "fr": {"dob": "Date de naissance", "ssn": "SSN", "member": "Member ID", "mbi": "Medicare MBI",
           "dx": "Diagnostic", "intro": "Veuillez trouver ci-dessous le dossier du patient pour l'orientation.",
           "outro": "Je reste à votre disposition. Cordialement"},
}


def patient_rows(rng: random.Random, count: int, lang: str) -> list[dict[str, str]]:
    """Patients as table rows: a name, one or more of SSN, member ID and MBI, and a date of
    birth or a diagnosis or both (with a medicine now and then)."""
    labels = LABELS[lang]
    rows = []
    for _ in range(count):
        code, name = rng.choice(ICD)
        row = {"Name": f"{rng.choice(FIRST)} {rng.choice(LAST)}"}
        with_dob, with_dx = rng.random() < 0.7, rng.random() < 0.7
        if with_dob:
            row[labels["dob"]] = dob(rng, lang if lang == "es" else "en")
        picks = rng.sample(["ssn", "member", "mbi"], rng.randint(1, 3))
        if "ssn" in picks:
            row[labels["ssn"]] = ssn(rng, rng.choice(["-", " ", "-", "."]))
        if "member" in picks:
            row[labels["member"]] = member_id(rng)
        if "mbi" in picks:
            row[labels["mbi"]] = mbi(rng, rng.random() < 0.5)
        if with_dx or not with_dob:
            row[labels["dx"]] = f"{code} {name}" if rng.random() < 0.7 else f"{code}"
        if rng.random() < 0.3:
            row["Rx"] = rng.choice(MEDS)
        rows.append(row)
    return rows


def rows_as_text(rows: list[dict[str, str]], style: str) -> str:
    if style == "lines":
        return "\n\n".join("\n".join(f"{k}: {v}" for k, v in r.items()) for r in rows)
    if style == "inline":
        return "\n".join(", ".join(f"{k} {v}" for k, v in r.items()) for r in rows)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return "\n".join([",".join(keys)] + [",".join(r.get(k, "").replace(",", " ") for k in keys) for r in rows])


def docx(text: str) -> bytes:
    paragraphs = "".join(f"<w:p><w:r><w:t>{_xml(line)}</w:t></w:r></w:p>" for line in text.splitlines())
    return _zip({
        "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>',
        "word/document.xml": '<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxml'
                             f'formats.org/wordprocessingml/2006/main"><w:body>{paragraphs}</w:body></w:document>',
    })


def xlsx(rows: list[dict[str, str]]) -> bytes:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = [keys] + [[r.get(k, "") for k in keys] for r in rows]
    strings: list[str] = []
    sheet_rows = []
    for i, row in enumerate(table, 1):
        cells = []
        for j, value in enumerate(row):
            strings.append(value)
            cells.append(f'<c r="{chr(65 + j)}{i}" t="s"><v>{len(strings) - 1}</v></c>')
        sheet_rows.append(f'<row r="{i}">{"".join(cells)}</row>')
    return _zip({
        "[Content_Types].xml": '<?xml version="1.0"?><Types/>',
        "xl/sharedStrings.xml": "<sst>" + "".join(f"<si><t>{_xml(s)}</t></si>" for s in strings) + "</sst>",
        "xl/worksheets/sheet1.xml": f"<worksheet><sheetData>{''.join(sheet_rows)}</sheetData></worksheet>",
    })


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _zip(files: dict[str, str | bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


def pdf(text: str) -> bytes:
    """A one-page PDF; real_pdf writes one text line, so lines are joined with ' / '."""
    flat = " / ".join(line for line in text.splitlines() if line.strip())
    safe = flat.replace("\\", " ").replace("(", " ").replace(")", " ")
    return real_pdf(safe.encode("latin-1", "replace").decode("latin-1"))


def message(body: str, *, to: str = "someone@outside.example", sender: str = "dr.roe@practice.example",
            subject: str = "Referral", html: bool = False,
            attachments: tuple[tuple[str, str, bytes], ...] = ()) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Dr. Jane Roe <{sender}>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = "Tue, 01 Dec 2026 09:00:00 +0000"
    msg["Message-ID"] = "<phi-sample@practice.example>"
    if html:
        msg.set_content("See the HTML part.")
        msg.add_alternative("<html><body><p>" + body.replace("\n", "<br>\n") + "</p></body></html>", subtype="html")
    else:
        msg.set_content(body)
    for name, ctype, data in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# ------------------------------------------------------------------ the Done-when messages

DONE_WHEN_TEXT = (
    "Patient list for the billing review:\n"
    "Name: Jane Roe, DOB 03/14/1962, SSN 536-22-1234\n"
    "Name: John Doe, DOB 07/02/1958, SSN 212-67-4456\n"
    "Member ID: XYZ123456789 (Aetna PPO)\n"
    "Diagnoses: F32.9 Major depressive disorder, single episode; F41.1 Generalized anxiety disorder\n"
)
SECRET_VALUES = ("536-22-1234", "212-67-4456", "XYZ123456789", "03/14/1962", "07/02/1958", "Jane Roe", "John Doe")


def done_when_body(to: str) -> bytes:
    return message("Hello,\n\n" + DONE_WHEN_TEXT + "\nThanks, Jane\n", to=to, subject="Billing review")


def done_when_pdf(to: str) -> bytes:
    return message("Hello, the list is attached.\n\nThanks, Jane\n", to=to, subject="Billing review",
                   attachments=(("list.pdf", "application/pdf", pdf(DONE_WHEN_TEXT)),))


def business_mail(to: str, n: int = 0) -> bytes:
    return message(
        f"Hello,\n\nPlease confirm order PO-2026-{4410 + n} for 12 boxes of exam gloves (size M) at $18.50 each, "
        "total $222.00, delivery by 12/15/2026. Our account number is 100-2234-88.\n\n"
        "Also, the rent for December ($4,250.00, ref. INV 2026-12-001) was paid on 12/01/2026 by transfer "
        "from account ending 4471. Invoice 88231 dated 11/28/2026 is attached to our books.\n\n"
        "Call us at 555-201-4477 or fax 555-201-4478. Best regards, Front office\n",
        to=to, subject=f"Order PO-2026-{4410 + n} and December rent",
    )


# ------------------------------------------------------------------ the generated set

@dataclass(frozen=True)
class Sample:
    raw: bytes
    container: str
    lang: str
    style: str


CONTAINERS = ("body", "html", "pdf", "docx", "xlsx", "csv", "txt", "zip")


SPARSE = {  # one identifier in a sentence, with the context words of the language
    "en": ["Can you check the claim for our patient {name}? Her Medicare number is {mbi}.",
           "Client {name} (SSN {ssn}) missed the session; please reschedule.",
           "For {name}, member ID {member}, the prior authorization is still pending."],
    "es": ["¿Puede revisar la reclamación del paciente {name}? Su número de Medicare es {mbi}.",
           "El paciente {name}, SSN {ssn}, no vino a la cita.",
           "Para {name}, Member ID {member}, la autorización del seguro médico sigue pendiente."],
    "de": ["Können Sie den Antrag für unseren Patienten {name} prüfen? Medicare-Nummer {mbi}.",
           "Patientin {name}, SSN {ssn}, hat den Termin verpasst.",
           "Für {name}, Member ID {member}, ist die Genehmigung der Versicherung noch offen."],
    "fr": ["Pouvez-vous vérifier la demande pour notre patient {name} ? Son numéro Medicare est {mbi}.",
           "Le patient {name}, SSN {ssn}, a manqué la séance.",
           "Pour {name}, Member ID {member}, l'autorisation de la mutuelle est en attente."],
}


def generated(count: int, seed: int = 17) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        lang = rng.choice(list(LABELS))
        container = CONTAINERS[i % len(CONTAINERS)]
        style = rng.choice(["lines", "inline", "csv"])
        rows = patient_rows(rng, rng.randint(1, 4), lang)
        text = rows_as_text(rows, "csv" if container in ("csv", "xlsx") else style)
        labels = LABELS[lang]
        greeting = {"en": "Hi,", "es": "Hola,", "de": "Hallo,", "fr": "Bonjour,"}[lang]
        frame = f"{greeting}\n\n{labels['intro']}\n\n"
        attachments: tuple[tuple[str, str, bytes], ...] = ()
        if rng.random() < 0.3:  # a single identifier in running text rather than a record
            style = "sparse"
            text = rng.choice(SPARSE[lang]).format(name=f"{rng.choice(FIRST)} {rng.choice(LAST)}", mbi=mbi(rng),
                                                   ssn=ssn(rng), member=member_id(rng))
        if container in ("body", "html"):
            body = frame + text + f"\n\n{labels['outro']}\n"
        else:
            body = frame + "(attached)\n\n" + labels["outro"] + "\n"
            name = f"records{i}"
            if container == "pdf":
                attachments = ((f"{name}.pdf", "application/pdf", pdf(text)),)
            elif container == "docx":
                attachments = ((f"{name}.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                                docx(text)),)
            elif container == "xlsx":
                attachments = ((f"{name}.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                                xlsx(rows if style != "sparse" else [{"Note": text}])),)
            elif container == "csv":
                attachments = ((f"{name}.csv", "text/csv", text.encode("utf-8")),)
            elif container == "txt":
                attachments = ((f"{name}.txt", "text/plain", text.encode("utf-8")),)
            else:
                attachments = ((f"{name}.zip", "application/zip", _zip({f"{name}.csv": text.encode("utf-8")})),)
        out.append(Sample(message(body, html=container == "html", attachments=attachments,
                                  subject=rng.choice(["Referral", "Records", "Anfrage", "Dossier", "Remisión"])),
                          container, lang, style))
    return out
