//! Word lists the synthetic people are drawn from. Common Norwegian names and
//! street names; postal codes are real codes for the towns named, which are
//! public facts and not personal data.

pub(super) const GIVEN_FEMALE: &[&str] = &[
    "Nora", "Emma", "Ingrid", "Sofie", "Maja", "Olivia", "Sara", "Ella", "Hanna", "Ida", "Anne",
    "Inger", "Kari", "Marit", "Liv", "Ingeborg", "Solveig", "Astrid", "Randi", "Hilde", "Silje",
    "Kristin", "Tone", "Marte", "Synnøve", "Åse", "Frida", "Tuva", "Sigrid", "Live",
];

pub(super) const GIVEN_MALE: &[&str] = &[
    "Jakob", "Emil", "Noah", "Oliver", "Filip", "William", "Lucas", "Henrik", "Aksel", "Magnus",
    "Jan", "Per", "Bjørn", "Ole", "Lars", "Kjell", "Knut", "Arne", "Svein", "Geir", "Terje",
    "Håkon", "Eirik", "Sindre", "Øystein", "Tor", "Trond", "Vegard", "Sander", "Johannes",
];

pub(super) const FAMILY: &[&str] = &[
    "Hansen",
    "Johansen",
    "Olsen",
    "Larsen",
    "Andersen",
    "Pedersen",
    "Nilsen",
    "Kristiansen",
    "Jensen",
    "Karlsen",
    "Johnsen",
    "Pettersen",
    "Eriksen",
    "Berg",
    "Haugen",
    "Hagen",
    "Johannessen",
    "Andreassen",
    "Jacobsen",
    "Dahl",
    "Jørgensen",
    "Henriksen",
    "Lund",
    "Halvorsen",
    "Sørensen",
    "Jakobsen",
    "Moen",
    "Gundersen",
    "Iversen",
    "Strand",
    "Solberg",
    "Svendsen",
    "Eide",
    "Knutsen",
    "Martinsen",
    "Paulsen",
    "Bakken",
    "Kristoffersen",
    "Mathisen",
    "Lie",
    "Rønning",
    "Aas",
    "Nygård",
    "Fjeld",
    "Vik",
];

pub(super) const STREETS: &[&str] = &[
    "Storgata",
    "Kirkegata",
    "Skolegata",
    "Parkveien",
    "Fjordveien",
    "Bakkeveien",
    "Granveien",
    "Bjørkeveien",
    "Solbakken",
    "Strandgata",
    "Sjøgata",
    "Nordre gate",
    "Løkkeveien",
    "Elvegata",
    "Tollbugata",
    "Rosenborggata",
    "Fjellveien",
    "Havnegata",
    "Kongens gate",
    "Lindeveien",
];

pub(super) const POSTAL_AREAS: &[(&str, &str)] = &[
    ("0150", "Oslo"),
    ("0450", "Oslo"),
    ("0655", "Oslo"),
    ("5003", "Bergen"),
    ("5089", "Bergen"),
    ("7011", "Trondheim"),
    ("7030", "Trondheim"),
    ("4006", "Stavanger"),
    ("9008", "Tromsø"),
    ("8006", "Bodø"),
    ("4610", "Kristiansand S"),
    ("3015", "Drammen"),
    ("1606", "Fredrikstad"),
    ("2317", "Hamar"),
    ("6002", "Ålesund"),
    ("3117", "Tønsberg"),
    ("2815", "Gjøvik"),
    ("9510", "Alta"),
    ("6800", "Førde"),
    ("8622", "Mo i Rana"),
];

/// Second citizenships, ISO 3166-1 alpha-3.
pub(super) const OTHER_COUNTRIES: &[&str] = &[
    "SWE", "DNK", "POL", "LTU", "DEU", "GBR", "PHL", "SOM", "SYR", "ISL",
];

/// Folkeregisteret's marital status codes (sivilstand), adult share in order.
pub(super) const MARITAL_ADULT: &[&str] = &[
    "ugift",
    "ugift",
    "ugift",
    "gift",
    "gift",
    "gift",
    "gift",
    "skilt",
    "separert",
    "enke_eller_enkemann",
];
