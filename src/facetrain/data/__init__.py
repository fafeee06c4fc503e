"""Face data: `formats/` (the files datasets come in), `tools/` (the data verbs' logic), `guards/` (checks
on untrusted input before it is decoded), and the training input (`training_source`, `augment`,
`transforms`)."""
