//! Running the independent FHIR validators over resources the SDK builds.
