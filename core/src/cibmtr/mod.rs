//! The CIBMTR Direct FHIR Service API: CRID registration, the de-identified Patient, lab
//! Observations for form 2402 and bulk submission.
