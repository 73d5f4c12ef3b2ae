"""Words mail clients write around a reply, in the languages a European shop meets.

These lists only add confidence to what the shapes in `shapes` find: a quote
header is found by its shape (a date, a sender, a colon, above a quote) and
the verb "wrote" in some language makes a short or odd one count; a header
block is a run of "Label: value" lines whatever the labels, and a known
sender label lets a two-line block count. Add a language by adding its words
here; nothing else needs to change.

All entries are matched case-insensitively, as whole words.
"""
from __future__ import annotations

# The verb of a quote header: "On ... Shop wrote:", "Am ... schrieb Shop:".
WROTE = (
    # en
    "wrote", "writes", "wrote on",
    # de
    "schrieb", "schreibt", "geschrieben",
    # fr
    "a écrit", "écrit", "a ecrit",
    # nl
    "schreef", "het volgende geschreven",
    # pl
    "napisał", "napisała", "napisał(a)", "napisal", "pisze",
    # pt, es
    "escreveu", "escribió", "escribio", "escribe",
    # it
    "ha scritto", "scrisse",
    # sv, no, da
    "skrev", "skriver",
    # ru, uk, bg, sr
    "написал", "написала", "написал(а)", "пишет", "написав", "пише", "написа",
    # fi, hu, cs, sk, sl, hr, ro, tr, el
    "kirjoitti", "írta", "napsal", "napsala", "napísal", "je napisal", "je napisao",
    "a scris", "yazdı", "έγραψε",
    # zh, ko
    "写道", "寫道", "작성",
)

# Words a quote header starts with, before the date: confidence only.
HEADER_INTRO = (
    "on", "at", "am", "le", "op", "el", "em", "il", "in data", "w dniu", "dnia",
    "den", "på", "dne", "в", "у", "στις",
)

# Labels of an Outlook-style header block, by field. Any "Label: value" run
# of the right shape counts; these words let a short or unusual one count.
FROM_LABELS = (
    "from", "von", "absender", "de", "expéditeur", "van", "afzender", "da", "mittente",
    "remitente", "fra", "från", "afsender", "avsender", "avsändare", "od", "nadawca",
    "от", "отправитель", "від", "відправник", "lähettäjä", "feladó", "odesílatel",
    "kimden", "από", "发件人", "寄件者", "差出人", "sender",
)
DATE_LABELS = (
    "sent", "date", "gesendet", "datum", "envoyé", "envoyé le", "date d'envoi",
    "verzonden", "verstuurd", "enviado", "enviada", "enviada em", "enviado el", "fecha",
    "inviato", "data", "skickat", "sendt", "dato", "wysłano", "wysłane", "data wysłania",
    "отправлено", "дата", "надіслано", "відправлено", "lähetetty", "päivämäärä",
    "elküldve", "dátum", "odesláno", "tarih", "ημερομηνία", "στάλθηκε", "发送时间",
    "日付", "送信日時", "message du",
)
TO_LABELS = (
    "to", "an", "à", "a", "aan", "para", "till", "til", "do", "кому", "komu",
    "vastaanottaja", "címzett", "kime", "προς", "收件人", "宛先", "destinataire",
    "empfänger", "destinatario",
)
COPY_LABELS = (
    "cc", "bcc", "kopie", "copie", "copie à", "cci", "kopia", "копия", "копія",
    "kopio", "másolat", "kopi", "cco", "ccn",
)
SUBJECT_LABELS = (
    "subject", "betreff", "objet", "sujet", "onderwerp", "asunto", "assunto", "oggetto",
    "ämne", "emne", "temat", "тема", "aihe", "tárgy", "předmět", "konu", "θέμα",
    "主题", "主旨", "件名",
)
OTHER_LABELS = (
    "reply-to", "antwort an", "répondre à", "beantwoorden - aan", "responder a",
    "rispondi a", "svara till", "importance", "wichtigkeit", "priorität",
)

# "-----Original Message-----" and its translations: the rest is history.
ORIGINAL_MESSAGE = (
    "original message", "original", "ursprüngliche nachricht", "original-nachricht",
    "originalnachricht", "message d'origine", "message d’origine", "message original",
    "courriel original", "oorspronkelijk bericht", "origineel bericht",
    "mensaje original", "mensagem original", "messaggio originale",
    "ursprungligt meddelande", "originalmeddelande", "oprindelig meddelelse",
    "oprindelig besked", "opprinnelig melding", "alkuperäinen viesti",
    "wiadomość oryginalna", "oryginalna wiadomość", "исходное сообщение",
    "оригинальное сообщение", "вихідне повідомлення", "оригінальне повідомлення",
    "původní zpráva", "eredeti üzenet", "reply message", "原始邮件", "原始郵件",
)

# Words that make a delimiter or a "Begin ...:" line a forward: what follows
# is kept (it may be the point of the mail), only its header block goes.
FORWARDED = (
    "forwarded", "forward", "fwd", "weitergeleitete", "weitergeleiteten", "weitergeleitet",
    "transféré", "réexpédié", "doorgestuurd", "doorgestuurde", "reenviado",
    "reencaminhada", "encaminhada", "inoltrato", "vidarebefordrat",
    "vidarebefordrade", "videresendt", "videresendte", "edelleenlähetetty",
    "przekazana", "przekazywanej", "przesłana dalej", "пересылаемое",
    "пересланное", "переадресованного", "переслане", "пересланого", "přeposlaná",
    "továbbított", "προωθημένο", "iletilen", "转发", "轉寄",
)

# The verb of a mobile signature, in reading order: "Sent from my iPhone".
SENT = (
    "sent", "gesendet", "versendet", "envoyé", "envoye", "verzonden", "verstuurd",
    "enviado", "inviato", "skickat", "sendt", "wysłane", "wysłano", "отправлено",
    "надіслано", "відправлено", "lähetetty", "odesláno", "küldve", "trimis",
    "gönderildi", "στάλθηκε", "poslano", "odoslané",
)
# What may stand between that verb and the device: "from", "von", "vanaf mijn" ...
SENT_VIA = (
    "from", "via", "with", "using", "on", "by", "von", "vom", "mit", "über", "aus",
    "de", "depuis", "à partir de", "à partir d'", "à partir d’", "avec", "par", "vanaf",
    "vanuit", "van", "met", "desde", "con", "do", "da", "dal", "dalla", "dallo",
    "a partir do", "a partir de", "pelo", "pela", "com", "tramite", "från", "med", "fra",
    "z", "ze", "przez", "с", "со", "из", "через", "з", "із", "iz", "din", "od",
)
# "my": a signature names the sender's own device.
MY = (
    "my", "meinem", "meiner", "meinen", "mon", "ma", "mijn", "mi", "meu", "minha",
    "mio", "mia", "min", "mitt", "mojego", "mojej", "mého", "mé", "моего", "моей",
    "мого", "моєї", "mein", "il mio",
)
# Devices and mail apps named in signatures ("Sent from Yahoo Mail on Android").
DEVICES = (
    "iphone", "ipad", "ipod", "android", "blackberry", "outlook", "mail", "gmail",
    "yahoo", "aol", "proton", "protonmail", "samsung", "galaxy", "huawei", "xiaomi",
    "pixel", "motorola", "nokia", "fairphone", "oneplus", "oppo", "sony", "xperia",
    "mobile", "mobil", "mobiel", "móvil", "movil", "celular", "cellulare", "telefon",
    "telefoon", "telefone", "telefono", "teléfono", "téléphone", "smartphone",
    "handy", "mobilgerät", "mobiltelefon", "tablet", "thunderbird", "k-9", "fairemail",
    "bluemail", "spark", "airmail", "edison", "tuta", "tutanota", "gmx", "web.de",
    "t-online", "icloud", "windows", "fastmail", "zoho", "typeapp", "mailbird",
    "canary", "superhuman", "courrier", "correo", "posta", "e-mail", "email",
    "телефона", "телефону", "айфона", "iphone'a", "iphonesta", "iphonea", "iphonu",
)
# "Get Outlook for iOS" in other words: a short line naming Outlook and a
# mobile system is always the app's advertisement.
MOBILE_SYSTEMS = ("ios", "android")

# Closing formulas. A closing followed, after a blank line, by a block of
# short name/title lines ending the mail is a business signature.
CLOSINGS = (
    "regards", "best regards", "kind regards", "warm regards", "best wishes", "best",
    "cheers", "thanks", "thank you", "many thanks", "sincerely", "yours sincerely",
    "viele grüße", "viele grüsse", "beste grüße", "liebe grüße", "freundliche grüße",
    "mit freundlichen grüßen", "mit freundlichen grüssen", "gruß", "grüße", "lg", "mfg",
    "cordialement", "bien cordialement", "bien à vous", "salutations", "amicalement",
    "met vriendelijke groet", "met vriendelijke groeten", "vriendelijke groet", "groeten",
    "groetjes", "saludos", "un saludo", "atentamente", "cumprimentos", "atenciosamente",
    "abraços", "cordiali saluti", "distinti saluti", "saluti", "un saluto",
    "med vänlig hälsning", "vänliga hälsningar", "hälsningar", "mvh", "med venlig hilsen",
    "venlig hilsen", "vennlig hilsen", "hilsen", "pozdrawiam", "z poważaniem",
    "serdecznie pozdrawiam", "с уважением", "всего доброго", "з повагою",
    "ystävällisin terveisin", "terveisin",
)

# A company mail gateway's warning put above the customer's text: it starts
# with a warning word and says the mail came from outside.
BANNER_STARTS = (
    "caution", "warning", "external email", "external", "[external]", "achtung",
    "vorsicht", "warnung", "externe e-mail", "externe mail", "attention", "avertissement",
    "attenzione", "let op", "waarschuwing", "atención", "precaución", "cuidado", "uwaga",
    "varning", "advarsel", "obs",
)
BANNER_OUTSIDE = (
    "outside", "external", "extern", "externen", "externer", "außerhalb", "ausserhalb",
    "l'extérieur", "l’extérieur", "extérieur", "externe", "buiten", "esterno", "esterna",
    "fuera", "externo", "spoza", "zewnątrz", "utanför", "utenfor", "udenfor", "uden for",
)

# A legal footer: a long paragraph that says it is confidential and speaks
# of its intended recipient. Stems, matched at word starts.
CONFIDENTIAL = (
    "confidential", "privileged", "vertraulich", "confidentiel", "vertrouwelijk",
    "riservat", "confidencial", "confidenziale", "poufn", "konfidentiel", "fortrolig",
    "konfidentiell", "конфиденциал", "конфіденційн",
)
ADDRESSEE = (
    "intended", "recipient", "addressee", "empfänger", "adressat", "bestimmt",
    "destinataire", "destinatario", "destinatário", "geadresseerde", "ontvanger",
    "bestemd", "adresat", "odbiorc", "mottagare", "modtager", "mottaker", "адресат",
    "получател", "одержувач",
)
DISCLAIMER_TITLES = (
    "disclaimer", "confidentiality notice", "legal notice", "haftungsausschluss",
    "rechtlicher hinweis", "vertraulichkeitshinweis", "avis de confidentialité",
    "avertissement", "aviso legal", "aviso de confidencialidad", "clausola di riservatezza",
    "informativa", "vrijwaring", "zastrzeżenie",
)

# Antivirus advertisements mail clients add under the text.
VIRUS_FREE = (
    "avast.com", "avg.com", "scanned for viruses", "virus-free", "virenfrei",
    "sans virus", "virusvrij", "senza virus", "libre de virus", "sin virus",
    "wolny od wirusów", "virusfri",
)
