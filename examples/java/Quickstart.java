// The CIBMTR workflow from Java, with the blocking API, against the local sandbox.
//
// Every suspend function of the Kotlin API has a ...Blocking twin that Java calls directly;
// Kotlin's default arguments are not visible from Java, so pass null (or the default) for them.
// Top-level functions (generateKey, labCatalog, registerClientBlocking, ...) are static methods
// of CibmtrFhirKt.
//
//   java -cp cibmtr-fhir.jar:jna.jar:kotlin-stdlib.jar:kotlinx-coroutines-core-jvm.jar \
//        examples/java/Quickstart.java
import io.cibmtrfhir.CibmtrClient;
import io.cibmtrfhir.CibmtrFhirException;
import io.cibmtrfhir.CibmtrFhirKt;
import io.cibmtrfhir.HttpOptions;
import io.cibmtrfhir.LabResult;
import io.cibmtrfhir.LabSubmission;
import io.cibmtrfhir.OktaCredentials;
import io.cibmtrfhir.PasswordGrant;
import io.cibmtrfhir.Sandbox;
import io.cibmtrfhir.SandboxOptions;
import io.cibmtrfhir.SubmissionReport;
import java.time.Duration;
import java.util.List;

public class Quickstart {
    public static void main(String[] args) throws Exception {
        try (Sandbox sandbox = new Sandbox(new SandboxOptions())) {
            OktaCredentials okta = sandbox.credentials().getOkta();

            // HTTP settings (timeouts, proxy, extra CAs, retry bounds); null everywhere keeps the
            // defaults, and so does passing null instead of an HttpOptions.
            HttpOptions http = new HttpOptions(Duration.ofSeconds(20), Duration.ofSeconds(5),
                    null, null, null, List.of(), List.of(), null, null);

            // Your Okta service account; the token is cached and refreshed ahead of expiry.
            try (PasswordGrant auth = new PasswordGrant(okta.getTokenUrl(), okta.getClientId(),
                    okta.getClientSecret().expose(), okta.getUsername(), okta.getPassword().expose(),
                    okta.getScope(), null, http);
                 CibmtrClient client = new CibmtrClient("12345", auth, "test",
                    sandbox.urls().getCibmtrBase(), null, "cibmtr", "STU3", false, false, http)) {

                long crid = client.registerCridBlocking("Jane", "Doe", "1970-01-31", "F",
                        null, List.of(), null, null, null, null, null, null, null);
                System.out.println("CRID " + crid);
                System.out.println("Patient " + client.ensurePatientBlocking(crid));

                LabSubmission lab = client.submitLabBlocking(crid, "718-7", 12.5, "g/dL",
                        "2024-05-01T08:30:00-05:00", 12.0, 16.0, null, null, null);
                System.out.println("Hemoglobin " + lab.getStatus() + " " + lab.getId());

                List<LabResult> labs = List.of(
                        new LabResult("26464-8", 6.1, "10*9/L", "2024-05-01T08:30:00-05:00",
                                null, null, null, null, null),
                        new LabResult("777-3", 250.0, "10*9/L", "2024-05-01T08:30:00-05:00",
                                null, null, null, null, null),
                        new LabResult("718-7", 12.5, "g/dL", "2024-05-01T08:30:00",
                                null, null, null, null, null));
                SubmissionReport report = client.submitLabsBlocking(crid, labs, 8, false, 50,
                        progress -> System.out.println("  " + progress.getDone() + "/" + progress.getTotal()));
                System.out.println("created " + report.getCreated() + ", already present "
                        + report.getAlreadyPresent() + ", failed " + report.getFailed());

                // Errors are one sealed exception class with a subclass per kind.
                try {
                    client.submitLabBlocking(crid, "718-7", 12.5, "g/dL", "yesterday",
                            null, null, null, null, null);
                } catch (CibmtrFhirException.Validation e) {
                    System.out.println("refused " + e.getField() + ": " + e.getRule());
                }

                System.out.println("observations " + client.observationsBlocking(crid).size());
                System.out.println("token requests " + auth.stats().getTokenRequests());
                System.out.println("catalog " + CibmtrFhirKt.labCatalog().size() + " labs");
            }
        }
    }
}
