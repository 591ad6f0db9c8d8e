package io.cibmtrfhir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.function.Executable;

/**
 * What a Java caller can still get wrong that Kotlin's types stop at compile time: {@code null}
 * for a parameter that may not be null, and {@code null} inside a list or map. Each is refused in
 * the JVM, before any native call, by a {@link NullPointerException} that names the parameter (or,
 * inside a collection, the element's type): never a crash of the JVM or an opaque native error.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
class JavaNullsTest {
    private final Sandbox sb = new Sandbox(new SandboxOptions(0, 1800, 1000, true, false));
    private final OktaCredentials okta = sb.credentials().getOkta();
    private final String effective = "2024-05-01T08:30:00-05:00";

    @AfterAll
    void stop() {
        sb.close();
    }

    /** {@code call} throws the NullPointerException of Kotlin's parameter check for {@code parameter}. */
    private static void refusesNull(String parameter, Executable call) {
        NullPointerException e = assertThrows(NullPointerException.class, call);
        assertTrue(e.getMessage() != null && e.getMessage().endsWith("parameter " + parameter), e.getMessage());
    }

    private PasswordGrant password() throws CibmtrFhirException {
        return new PasswordGrant(okta.getTokenUrl(), okta.getClientId(), okta.getClientSecret().expose(),
                okta.getUsername(), okta.getPassword().expose(), okta.getScope(), null, null);
    }

    @Test
    void theFourFlowsRefuseNull() {
        String url = okta.getTokenUrl();
        refusesNull("tokenUrl", () -> new PasswordGrant(null, "id", "secret", "user", "password", null, null, null));
        refusesNull("password", () -> new PasswordGrant(url, "id", "secret", "user", null, null, null, null));
        refusesNull("clientId", () -> new ClientCredentials(url, null, "secret", null, "client_secret_post", null, null));
        refusesNull("authMethod", () -> new ClientCredentials(url, "id", "secret", null, null, null, null));
        refusesNull("privateKey", () -> new BackendServices("id", null, url, null, null, "RS384", "system/*.read", null, null));
        refusesNull("algorithm", () -> new BackendServices("id", "pem", url, null, null, null, "system/*.read", null, null));
        refusesNull("redirectUri", () -> new AuthorizationCode("id", null, "openid", null, null, "http://127.0.0.1:9/a", url, null, null, null));
        refusesNull("redirectUrl", () -> {
            SmartAppCredentials s = sb.credentials().getSmart();
            new AuthorizationCode(s.getClientId(), s.getRedirectUri(), s.getScope(), s.getClientSecret().expose(),
                    s.getFhirBase(), null, null, null, null, null).completeBlocking(null);
        });
        refusesNull("redirectUris", () -> CibmtrFhirKt.registerClientBlocking(sb.urls().getSmartRegister(), "x", null, "openid", null));
        refusesNull("algorithm", () -> CibmtrFhirKt.generateKey(null));
        refusesNull("privateKey", () -> CibmtrFhirKt.publicJwks(null, "RS384"));
    }

    @Test
    void theClientsRefuseNull() throws Exception {
        refusesNull("baseUrl", () -> new FhirClient(null, null, "R4", Map.of(), null));
        refusesNull("defaultParams", () -> new FhirClient(sb.urls().getFhirBase(), null, "R4", null, null));
        try (FhirClient fhir = new FhirClient(sb.urls().getFhirBase(), null, "R4", Map.of(), null)) {
            refusesNull("resource", () -> fhir.createBlocking(null));
            refusesNull("params", () -> fhir.searchBlocking("Patient", null));
            refusesNull("id", () -> fhir.readBlocking("Patient", null));
        }
        refusesNull("auth", () -> new CibmtrClient("12345", null, "test", null, null, "cibmtr", "STU3", false, false, null));
        refusesNull("ccn", () -> new CibmtrClient(null, password(), "test", null, null, "cibmtr", "STU3", false, false, null));
        try (CibmtrClient client = sb.cibmtrClient()) {
            refusesNull("firstName", () -> client.registerCridBlocking(null, "Doe", "1970-01-31", "F",
                    null, List.of(), null, null, null, null, null, null, null));
            refusesNull("race", () -> client.registerCridBlocking("Jane", "Doe", "1970-01-31", "F",
                    null, null, null, null, null, null, null, null, null));
            refusesNull("unit", () -> client.submitLabBlocking(1L, "718-7", 12.5, null, effective, null, null, null, null, null));
            refusesNull("lab", () -> client.submitLabResultBlocking(1L, null));
            refusesNull("labs", () -> client.submitLabsBlocking(1L, null, 8, false, 50, null));
            refusesNull("loinc", () -> new LabResult(null, 12.5, "g/dL", effective, null, null, null, null, null));
        }
    }

    @Test
    void theSandboxRefusesNull() {
        refusesNull("options", () -> new Sandbox((SandboxOptions) null));
        refusesNull("route", () -> sb.setFault(null, new Fault(503, Map.of(), "", 0, 1, null, 0.0)));
        refusesNull("headers", () -> new Fault(503, null, "", 0, 1, null, 0.0));
        refusesNull("jwks", () -> sb.registerBackendClient("id", null));
        refusesNull("clientId", () -> sb.tokenRequests(null));
    }

    @Test
    void nullInsideACollectionIsRefusedInTheJvm() throws Exception {
        // The element has no parameter name of its own: the check names the type it lowers.
        try (CibmtrClient client = sb.cibmtrClient()) {
            long before = sb.requests("crid");
            NullPointerException race = assertThrows(NullPointerException.class, () -> client.registerCridBlocking(
                    "Jane", "Doe", "1970-01-31", "F", null, Arrays.asList("2106-3", null), null, null, null, null, null, null, null));
            assertTrue(race.getMessage().contains("FfiConverterString"), race.getMessage());
            LabResult lab = new LabResult("718-7", 12.5, "g/dL", effective, null, null, null, null, null);
            NullPointerException labs = assertThrows(NullPointerException.class,
                    () -> client.submitLabsBlocking(1L, Arrays.asList(lab, null), 8, false, 50, null));
            assertTrue(labs.getMessage().contains("FfiConverterTypeLabResult"), labs.getMessage());
            assertEquals(before, sb.requests("crid"));
        }
        Map<String, String> params = new HashMap<>();
        params.put("researchstudy", null);
        NullPointerException map = assertThrows(NullPointerException.class,
                () -> new FhirClient(sb.urls().getFhirBase(), null, "R4", params, null));
        assertTrue(map.getMessage().contains("FfiConverterString"), map.getMessage());
    }

    @Test
    void aJavaAuthReturningNullIsAConfigErrorNotAPanic() throws Exception {
        Auth broken = () -> null;
        CibmtrFhirException.Config e = assertThrows(CibmtrFhirException.Config.class,
                () -> new CibmtrClient("12345", broken, "test", sb.urls().getCibmtrBase(), null, "cibmtr", "STU3", false, false, null));
        assertTrue(e.getDetail().startsWith("the Auth implementation failed: java.lang.NullPointerException"), e.getDetail());
        assertTrue(!e.getDetail().contains("\n"), "one line, not the stack trace: " + e.getDetail());
        Auth throwing = () -> {
            throw new IllegalStateException("no token source configured");
        };
        CibmtrFhirException.Config t = assertThrows(CibmtrFhirException.Config.class,
                () -> new FhirClient(sb.urls().getFhirBase(), throwing, "R4", Map.of(), null));
        assertEquals("the Auth implementation failed: java.lang.IllegalStateException: no token source configured", t.getDetail());
        // The JVM and the library are still usable.
        try (PasswordGrant auth = password()) {
            assertTrue(!auth.tokenBlocking().isEmpty());
        }
    }
}
