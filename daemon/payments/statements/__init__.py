"""Bank statements: the owner's account export marks bank transfers paid.

The path of a statement, one module each:

    entries.py    the values read: a `Statement` of `Entry`s, each with its
                  identity at the bank (`key`)
    reading.py    bytes → a `Statement` (the format told by content: a .zip is
                  opened, XML is CAMT, ":20:…:61:" is MT940, else a CSV
                  export), bounded in size; a file that does not parse is
                  refused whole, before anything is written
    camt.py       CAMT.052/.053/.054 XML (ISO 20022), any version
    swift.py      MT940, through the `mt-940` package
    bank_csv.py   CSV exports: the built-in German layouts, or the columns
                  named in [statements.csv]
    matching.py   finding the orders a remittance text names (one indexed
                  query for many entries)
    importer.py   one transaction: each new credit becomes paid / already
                  paid / amount differs / unmatched, through daemon.orders.service
    report.py     that outcome as text (CLI, receipt) and JSON

`ordermail payments import FILE` (daemon/cli/payments.py) and a statement
mailed to the command address (daemon/handling/owner_mail.py) both call
`importer.import_statement`.
"""
