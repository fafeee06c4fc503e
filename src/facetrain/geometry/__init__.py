"""Face geometry shared by alignment and evaluation: the 5-point templates and similarity fits."""
