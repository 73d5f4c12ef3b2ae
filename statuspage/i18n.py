"""The pages' words in German, English and French: a dict, no catalog to compile.

Why not gettext: the pages say about a hundred short things; one readable
table beside the code is easier to keep complete (a test checks that every
`_()` in the templates has all three languages) than .po files with an
extract-and-compile step. The mails chose whole template files per language
instead, because shop owners rewrite mails; they rarely reword a page.
Babel still does what a table cannot: money, dates and plural rules.

`_("Order {number}", number=n)`: the English text is the key; a value that
is a pair (one, other) is chosen by the language's plural rule for `n`.
"""
from __future__ import annotations

import functools
import hashlib

from babel import Locale

LANGS = ("de", "en", "fr")

MESSAGES: dict[str, dict[str, str | tuple[str, str]]] = {
    # layout and sign-in
    "Skip to the content": {"de": "Zum Inhalt springen", "fr": "Aller au contenu"},
    "Sign in": {"de": "Anmelden", "fr": "Se connecter"},
    "Sign out": {"de": "Abmelden", "fr": "Se déconnecter"},
    "Press the button to sign in on this device.": {
        "de": "Drücken Sie den Knopf, um sich auf diesem Gerät anzumelden.",
        "fr": "Appuyez sur le bouton pour vous connecter sur cet appareil."},
    "Enter the e-mail address you ordered with. We will send you a link that signs you in: it works once, "
    "for 15 minutes. No password needed.": {
        "de": "Geben Sie die E-Mail-Adresse ein, mit der Sie bestellt haben. Wir schicken Ihnen einen Link zum "
              "Anmelden: Er gilt einmal, 15 Minuten lang. Ein Passwort brauchen Sie nicht.",
        "fr": "Saisissez l’adresse e-mail utilisée pour votre commande. Nous vous envoyons un lien de connexion : "
              "il fonctionne une seule fois, pendant 15 minutes. Pas besoin de mot de passe."},
    "Enter the shop owner's e-mail address. We will send you a link that signs you in: it works once, "
    "for 15 minutes. No password needed.": {
        "de": "Geben Sie die E-Mail-Adresse des Shop-Inhabers ein. Wir schicken Ihnen einen Link zum Anmelden: "
              "Er gilt einmal, 15 Minuten lang. Ein Passwort brauchen Sie nicht.",
        "fr": "Saisissez l’adresse e-mail du propriétaire de la boutique. Nous vous envoyons un lien de "
              "connexion : il fonctionne une seule fois, pendant 15 minutes. Pas besoin de mot de passe."},
    "If {email} may sign in to the dashboard, we have just sent a sign-in link to that address.": {
        "de": "Falls {email} sich am Dashboard anmelden darf, haben wir soeben einen Anmelde-Link an diese "
              "Adresse geschickt.",
        "fr": "Si {email} peut se connecter au tableau de bord, nous venons d’envoyer un lien de connexion à "
              "cette adresse."},
    "Your e-mail address": {"de": "Ihre E-Mail-Adresse", "fr": "Votre adresse e-mail"},
    "Send me a sign-in link": {"de": "Anmelde-Link schicken", "fr": "M’envoyer un lien de connexion"},
    "Please enter an e-mail address like name@example.org.": {
        "de": "Bitte geben Sie eine E-Mail-Adresse wie name@example.org ein.",
        "fr": "Veuillez saisir une adresse e-mail comme nom@example.org."},
    "Check your mail": {"de": "Sehen Sie in Ihr Postfach", "fr": "Consultez vos e-mails"},
    "If there are orders for {email}, we have just sent a sign-in link to that address.": {
        "de": "Falls es Bestellungen für {email} gibt, haben wir soeben einen Anmelde-Link an diese Adresse geschickt.",
        "fr": "S’il existe des commandes pour {email}, nous venons d’envoyer un lien de connexion à cette adresse."},
    "The link works once, for 15 minutes. Nothing there? Look in the spam folder, or try again in a few minutes.": {
        "de": "Der Link gilt einmal, 15 Minuten lang. Nichts angekommen? Sehen Sie im Spam-Ordner nach oder "
              "versuchen Sie es in ein paar Minuten noch einmal.",
        "fr": "Le lien fonctionne une fois, pendant 15 minutes. Rien reçu ? Regardez dans les indésirables ou "
              "réessayez dans quelques minutes."},
    "This sign-in link does not work": {"de": "Dieser Anmelde-Link funktioniert nicht",
                                        "fr": "Ce lien de connexion ne fonctionne pas"},
    "It has expired or was used already. Ask for a new one.": {
        "de": "Er ist abgelaufen oder wurde schon benutzt. Fordern Sie einen neuen an.",
        "fr": "Il a expiré ou a déjà servi. Demandez-en un nouveau."},
    "Please try again": {"de": "Bitte noch einmal", "fr": "Veuillez réessayer"},
    "The form was too old, or your browser does not keep cookies for this site.": {
        "de": "Das Formular war zu alt, oder Ihr Browser speichert für diese Seite keine Cookies.",
        "fr": "Le formulaire était trop ancien, ou votre navigateur refuse les cookies de ce site."},
    "Back": {"de": "Zurück", "fr": "Retour"},
    "One moment…": {"de": "Einen Moment …", "fr": "Un instant…"},
    "Continue": {"de": "Weiter", "fr": "Continuer"},
    "Account": {"de": "Konto", "fr": "Compte"},

    # the customer's pages
    "Page not found": {"de": "Seite nicht gefunden", "fr": "Page introuvable"},
    "This link is unknown or no longer valid.": {"de": "Dieser Link ist unbekannt oder nicht mehr gültig.",
                                                 "fr": "Ce lien est inconnu ou n’est plus valable."},
    "Links to an order can expire. We can send you a new one by e-mail:": {
        "de": "Links zu einer Bestellung können ablaufen. Wir schicken Ihnen gern einen neuen per E-Mail:",
        "fr": "Les liens vers une commande peuvent expirer. Nous pouvons vous en envoyer un nouveau par e-mail :"},
    "Send me my link": {"de": "Meinen Link schicken", "fr": "M’envoyer mon lien"},
    "Your orders": {"de": "Ihre Bestellungen", "fr": "Vos commandes"},
    "All your orders": {"de": "Alle Ihre Bestellungen", "fr": "Toutes vos commandes"},
    "There are no orders for {email}.": {"de": "Für {email} gibt es keine Bestellungen.",
                                         "fr": "Il n’y a aucune commande pour {email}."},
    "The link to this order has expired.": {"de": "Der Link zu dieser Bestellung ist abgelaufen.",
                                            "fr": "Le lien vers cette commande a expiré."},
    "Show order {number}": {"de": "Bestellung {number} ansehen", "fr": "Voir la commande {number}"},
    "Order {number}": {"de": "Bestellung {number}", "fr": "Commande {number}"},
    "Placed on {day}": {"de": "Bestellt am {day}", "fr": "Passée le {day}"},
    "Status": {"de": "Status", "fr": "Statut"},
    "Tracking code": {"de": "Sendungsnummer", "fr": "Numéro de suivi"},
    "Track your parcel": {"de": "Sendung verfolgen", "fr": "Suivre votre colis"},
    "Track the parcel": {"de": "Sendung verfolgen", "fr": "Suivre le colis"},
    "Payment": {"de": "Zahlung", "fr": "Paiement"},
    "Pay with GiroCode": {"de": "Mit GiroCode bezahlen", "fr": "Payer avec le GiroCode"},
    "Scan the code with your banking app and every detail is filled in. Or transfer by hand:": {
        "de": "Scannen Sie den Code mit Ihrer Banking-App – alle Angaben sind dann schon ausgefüllt. "
              "Oder überweisen Sie von Hand:",
        "fr": "Scannez le code avec votre application bancaire : tout est déjà rempli. "
              "Ou faites le virement à la main :"},
    "GiroCode for the transfer of {amount} to {holder}": {
        "de": "GiroCode für die Überweisung von {amount} an {holder}",
        "fr": "GiroCode pour le virement de {amount} à {holder}"},
    "Beneficiary": {"de": "Empfänger", "fr": "Bénéficiaire"},
    "Amount": {"de": "Betrag", "fr": "Montant"},
    "Reference": {"de": "Verwendungszweck", "fr": "Référence"},
    "Items": {"de": "Artikel", "fr": "Articles"},
    "Item": {"de": "Artikel", "fr": "Article"},
    "Quantity": {"de": "Menge", "fr": "Quantité"},
    "Price": {"de": "Preis", "fr": "Prix"},
    "Total": {"de": "Summe", "fr": "Total"},
    "Shipping, fees and discounts": {"de": "Versand, Gebühren und Rabatte", "fr": "Livraison, frais et remises"},
    "Refunded": {"de": "Erstattet", "fr": "Remboursée"},
    "History": {"de": "Verlauf", "fr": "Historique"},
    "Questions? Reply to any of our e-mails about this order.": {
        "de": "Fragen? Antworten Sie einfach auf eine unserer E-Mails zu dieser Bestellung.",
        "fr": "Des questions ? Répondez simplement à l’un de nos e-mails concernant cette commande."},
    "This link works until {day}.": {"de": "Dieser Link gilt bis zum {day}.", "fr": "Ce lien est valable jusqu’au {day}."},

    # the progress line and status words
    "Received": {"de": "Eingegangen", "fr": "Reçue"},
    "Paid": {"de": "Bezahlt", "fr": "Payée"},
    "Shipped": {"de": "Versandt", "fr": "Expédiée"},
    "Cancelled": {"de": "Storniert", "fr": "Annulée"},
    "received": {"de": "eingegangen", "fr": "reçue"},
    "paid": {"de": "bezahlt", "fr": "payée"},
    "shipped": {"de": "versandt", "fr": "expédiée"},
    "cancelled": {"de": "storniert", "fr": "annulée"},
    "refunded": {"de": "erstattet", "fr": "remboursée"},
    "not paid": {"de": "nicht bezahlt", "fr": "non payée"},

    # the log
    "Order received": {"de": "Bestellung eingegangen", "fr": "Commande reçue"},
    "Payment received": {"de": "Zahlung eingegangen", "fr": "Paiement reçu"},
    "Payment reminder": {"de": "Zahlungserinnerung", "fr": "Rappel de paiement"},
    "Order cancelled": {"de": "Bestellung storniert", "fr": "Commande annulée"},
    "Refunded: {amount}": {"de": "Erstattet: {amount}", "fr": "Remboursé : {amount}"},
    "Shipping details updated": {"de": "Versanddaten aktualisiert", "fr": "Informations d’expédition mises à jour"},
    "Message from the shop": {"de": "Nachricht vom Shop", "fr": "Message de la boutique"},
    "Your message": {"de": "Ihre Nachricht", "fr": "Votre message"},
    "Message from the customer": {"de": "Nachricht der Kundschaft", "fr": "Message du client"},
    "Internal note": {"de": "Interner Vermerk", "fr": "Note interne"},
    "Mail bounced": {"de": "E-Mail unzustellbar", "fr": "E-mail non distribué"},
    "System": {"de": "System", "fr": "Système"},
    "by the shop": {"de": "vom Shop", "fr": "par la boutique"},
    "by the customer": {"de": "von der Kundschaft", "fr": "par le client"},
    "automatic": {"de": "automatisch", "fr": "automatique"},

    # the dashboard
    "Dashboard": {"de": "Übersicht", "fr": "Tableau de bord"},
    "Sign in to the dashboard": {"de": "Anmelden zur Übersicht", "fr": "Connexion au tableau de bord"},
    "Not for this address": {"de": "Nicht für diese Adresse", "fr": "Pas pour cette adresse"},
    "{email} may not see the dashboard.": {"de": "{email} darf die Übersicht nicht sehen.",
                                           "fr": "{email} n’a pas accès au tableau de bord."},
    "Orders": {"de": "Bestellungen", "fr": "Commandes"},
    "Filter": {"de": "Filter", "fr": "Filtre"},
    "Sort": {"de": "Sortierung", "fr": "Tri"},
    "Newest first": {"de": "Neueste zuerst", "fr": "Plus récentes d’abord"},
    "Oldest first": {"de": "Älteste zuerst", "fr": "Plus anciennes d’abord"},
    "Show": {"de": "Anzeigen", "fr": "Afficher"},
    "The filter does not work: {error}": {"de": "Der Filter funktioniert nicht: {error}",
                                          "fr": "Le filtre ne fonctionne pas : {error}"},
    "Status words paid, shipped, cancelled, refunded with and, or, not and brackets; fields customer: email: "
    "since: until: method: number:. Example: not paid and not cancelled": {
        "de": "Status paid, shipped, cancelled, refunded (oder bezahlt, versandt, storniert, erstattet) mit and, or, "
              "not und Klammern; Felder customer: email: since: until: method: number:. "
              "Beispiel: not paid and not cancelled",
        "fr": "Statuts paid, shipped, cancelled, refunded avec and, or, not et parenthèses ; champs customer: email: "
              "since: until: method: number:. Exemple : not paid and not cancelled"},
    "{n} orders": {"en": ("{n} order", "{n} orders"), "de": ("{n} Bestellung", "{n} Bestellungen"),
                   "fr": ("{n} commande", "{n} commandes")},
    "page {page} of {pages}": {"de": "Seite {page} von {pages}", "fr": "page {page} sur {pages}"},
    "Export as CSV": {"de": "Als CSV exportieren", "fr": "Exporter en CSV"},
    "Order": {"de": "Bestellung", "fr": "Commande"},
    "Date": {"de": "Datum", "fr": "Date"},
    "Customer": {"de": "Kundschaft", "fr": "Client"},
    "Commands by e-mail": {"de": "Befehle per E-Mail", "fr": "Commandes par e-mail"},
    "Pages": {"de": "Seiten", "fr": "Pages"},
    "Previous": {"de": "Zurück", "fr": "Précédente"},
    "Next": {"de": "Weiter", "fr": "Suivante"},
    "Status page": {"de": "Statusseite", "fr": "Page de suivi"},
    "expired": {"de": "abgelaufen", "fr": "expiré"},
    "Whole history": {"de": "Ganzer Verlauf", "fr": "Historique complet"},
    "internal": {"de": "intern", "fr": "interne"},
    "customer notified": {"de": "Kundschaft benachrichtigt", "fr": "client prévenu"},
    "undone": {"de": "rückgängig gemacht", "fr": "annulé"},
    "Mark paid": {"de": "Bezahlt", "fr": "Payée"},
    "Mark shipped": {"de": "Versandt", "fr": "Expédiée"},
    "Cancel": {"de": "Stornieren", "fr": "Annuler"},
    "Refund": {"de": "Erstatten", "fr": "Rembourser"},
    "Message": {"de": "Nachricht", "fr": "Message"},
    "Note": {"de": "Vermerk", "fr": "Note"},
}


def translator(lang: str):
    """`_` for one language."""
    return _translators(lang if lang in LANGS else "en")


@functools.lru_cache(maxsize=8)
def _translators(lang: str):
    plural_form = Locale.parse(lang).plural_form

    def _(msgid: str, **values) -> str:
        text = MESSAGES.get(msgid, {}).get(lang, msgid)
        if isinstance(text, tuple):
            text = text[0] if plural_form(values.get("n", 0)) == "one" else text[1]
        return text.format(**values) if values else text
    return _


def negotiate(accept_language: str, default: str) -> str:
    """The first of our languages the browser asks for (by q-value), else the shop's."""
    wanted = []
    for position, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                continue
        code = tag.strip().lower()[:2]
        if code in LANGS and quality > 0:
            wanted.append((-quality, position, code))
    return min(wanted)[2] if wanted else default


def reload() -> None:
    """SIGHUP: forget the translators made so far. The words are this module's
    table today; a gettext step would read its catalogs again here."""
    _translators.cache_clear()


def fingerprint() -> str:
    return hashlib.sha256(repr(sorted(MESSAGES.items())).encode()).hexdigest()
