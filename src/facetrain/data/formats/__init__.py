"""Dataset file formats: InsightFace `.bin` pair sets, memfiles, MXNet RecordIO, image folders, RFW,
and the image codec they share."""
