"""The offline biography corpus: a deterministic, synthetic stand-in for Bias in Bios.

Bias in Bios cannot be downloaded on our offline machines, so the classroom profile trains and tests on
short English biographies written here from templates. The corpus is built so that any gap between
groups measured later comes from the augmented data, not from the original data:

* **Balanced groups.** Every occupation has exactly as many male as female biographies in both splits,
  and the cultures (Arabic, Chinese, Portuguese, Spanish) rotate through each occupation x gender cell,
  so gender and culture carry no information about the occupation.
* **Occupation cues of three strengths.** *Strong* sentences belong to one occupation only ("He has been
  practising dentistry for ten years."). *Weak* sentences belong to a group of two related occupations
  (a studio: architect/painter; a clinic and patients: dentist/nurse; students and training:
  nurse/professor; research: professor/software engineer; projects and clients: software
  engineer/architect; steady hands and fine detail: painter/dentist). *Generic* sentences (family,
  hobbies, a city) fit every occupation. A ``weak_cue_share`` of biographies holds one weak group's
  sentences and nothing stronger; an ``ambiguous_share`` holds one strong sentence of its own occupation
  and one of another occupation, in random order; the rest hold one or two strong sentences. Every
  biography has ``min_sentences`` to ``max_sentences`` sentences, padded with generic ones, shuffled.
  The best any classifier can do is therefore about ``1 - (weak + ambiguous) / 2`` (0.75 with the
  defaults): weak and ambiguous biographies are a coin toss between two occupations.
* **Template variety.** About a dozen templates per occupation, eight per weak group and two dozen
  generic ones, each with alternatives (``[a|b|c]``) and slots (a city, a year, a number of years), so
  a model cannot memorise one sentence per occupation.
* **Pronouns and names.** The first sentence names the person in full; later sentences use he/his or
  she/her, as real Bias in Bios biographies do. Names come from name tables that packages ship:
  Faker's ``pt_BR``/``pt_PT`` (Portuguese) and ``es_ES``/``es_MX`` (Spanish) gendered first names, and
  Faker's ``zh_TW`` romanised gendered given names and surnames (Wade-Giles spellings such as
  "Shu-Fen Chen", the only gendered Latin-script Chinese names Faker ships; ``zh_CN``'s pinyin names
  are not split by gender). Faker's Arabic locales hold Arabic-script names only and no package we
  install ships romanised Arabic names by gender, so the Arabic names are a short hand-written table of
  common given names and family names in everyday English spellings (``ARABIC_NAMES``), not a
  transliteration. A first name found in two cultures, or in both genders of one culture, is dropped
  so that each name signals one culture and one gender.

Limits: these are template sentences, not real biographies. The vocabulary is small, the cues are
cleaner than real life, nothing is written about age or seniority, and the names are samples from
name tables, not the distribution of real people. Use the corpus to exercise the pipeline and to see
the direction of effects; use ``data.source: bias_in_bios`` for findings about real biographies.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from biasutils.config import GENDERS, Data, rows_per_cell

SPLITS = ("train", "test")
CUE_STRENGTHS = ("strong", "weak", "ambiguous")
MAX_CUE_SENTENCES = 2  # strong and weak biographies hold one or two cue sentences; ambiguous ones two

# ----------------------------------------------------------------------------------------------------
# Sentence templates. {Subj}/{subj} he/she, {obj} him/her, {poss}/{Poss} his/her, {refl} himself/herself,
# {first} the first name; {city}, {year}, {years} are filled at random; [a|b] picks one alternative.
# ----------------------------------------------------------------------------------------------------

STRONG_TEMPLATES: dict[str, tuple[str, ...]] = {
    "architect": (
        "{Subj} has designed [residential buildings|a public library|several schools|office towers] in {city}.",
        "{Poss} practice focuses on [sustainable building design|the reuse of old factories|timber construction|low-cost housing].",
        "{Subj} is a licensed architect [and a member of the local institute of architects|registered with the national board].",
        "{Subj} [draws up|prepares] floor plans and building permits for [private homes|hospitals|museums] and works with structural engineers.",
        "After a degree in architecture, {subj} joined a firm that [restores historic buildings|designs airports|plans new neighbourhoods].",
        "{Poss} design for [the new city hall|a riverside housing block|a renovated train station] won a regional architecture award.",
        "{Subj} [specialises|specializes] in [passive house standards|urban planning and zoning|facade design|buildings that blend into the landscape].",
        "{Subj} visits construction sites every week to check that the builders follow the approved drawings.",
        "Over {years} years {subj} has [renovated|designed] more than [forty|sixty|a hundred] houses and apartment buildings.",
        "{Subj} is [fascinated by|passionate about] how buildings shape the way people live and move through a neighbourhood.",
        "{Subj} uses building information modelling to coordinate [the engineers and contractors|the structural and mechanical teams] on site.",
        "{Subj} [restores|converts] [old warehouses|historic townhouses|disused churches] into homes and offices.",
    ),
    "dentist": (
        "{Subj} has been practising dentistry for {years} years.",
        "{Subj} runs a dental practice in {city} [with two hygienists|together with a partner|that treats whole families].",
        "{Poss} [special interests|main interests] are [cosmetic dentistry and implants|root canal treatment|orthodontics for teenagers|gum disease].",
        "{Subj} earned a doctor of dental surgery degree [in {year}|with honours] and trained further in [oral surgery|paediatric dentistry|periodontics].",
        "{Subj} [places crowns, bridges and veneers|fits braces and clear aligners|fills cavities and extracts wisdom teeth] for children and adults.",
        "{Subj} believes that good oral hygiene starts with the first tooth and visits schools to show children how to brush.",
        "{Subj} is a member of the national dental association and [writes|speaks] about [tooth whitening|dental implants|preventive dental care].",
        "{Subj} is known for gentle hands in the dental chair and for putting nervous people at ease before a filling.",
        "{Subj} [volunteers|spends one weekend a month] at a free dental service, providing check-ups and cleanings.",
        "{Subj} uses digital dental x-rays and 3D scans of the teeth to plan [implants|orthodontic treatment|restorations].",
        "Before opening {poss} own dental office, {subj} worked for {years} years in a hospital's oral surgery department.",
        "{Subj} [treats|sees] toothaches, broken teeth and bleeding gums [on short notice|the same day].",
    ),
    "nurse": (
        "{Subj} is a registered nurse [in the intensive care unit|on the paediatric ward|in the emergency department] of a hospital in {city}.",
        "{Subj} has worked night shifts on the [cardiac|oncology|maternity|surgical] ward for {years} years.",
        "{Subj} [completed|holds] a bachelor of science in nursing and [is certified in critical care|a certificate in wound care|trained as a midwife].",
        "{Subj} [administers medications|monitors vital signs|changes dressings] and [reports to the physicians on duty|keeps detailed charts for every shift].",
        "{Subj} began {poss} career as a nursing assistant [in a care home|in a rural hospital] before qualifying as a nurse.",
        "{Poss} nursing work focuses on [palliative care|neonatal care|elderly people with dementia|triage in the emergency room].",
        "{Subj} leads the nursing team on [the night shift|the surgical ward|the dialysis unit].",
        "{Subj} [works as a home health nurse|is a school nurse|is a travel nurse] and [loves the variety of the job|covers hospitals across the region].",
        "{Subj} was named nurse of the year at {poss} hospital in {year}.",
        "As a nurse practitioner, {subj} [runs vaccination days|manages chronic conditions|prescribes routine medication] for a rural district.",
        "{Subj} has spent {years} years at the bedside caring for [premature babies|cancer patients|people recovering from surgery].",
        "{Subj} [draws blood|inserts IV lines|takes blood pressure] [dozens of times a shift|on every round of the ward].",
    ),
    "painter": (
        "{Subj} [paints|works] mainly in [oil on canvas|watercolour|acrylics|egg tempera].",
        "{Poss} paintings [have been shown|hang] in [galleries|private collections|museums] in {city} and abroad.",
        "{Subj} is known for large [abstract canvases|landscape paintings|portraits|still lifes] with [bold brushwork|thick layers of paint].",
        "{Subj} studied painting at the academy of fine arts [in {city}|and later trained with a master of fresco].",
        "{Subj} has painted murals for [schools|hospitals|train stations|a city festival] in {city}.",
        "{Subj} mixes {poss} own pigments and stretches {poss} own canvases.",
        "{Poss} [recent|latest] series of paintings [explores memory and migration|depicts the sea at night|portrays family life].",
        "{Subj} [won|received] the [national|regional] prize for young painters in {year}.",
        "{Subj} paints outdoors whenever the weather allows, carrying {poss} easel [along the coast|into the hills].",
        "{Subj} gives weekend painting classes for adults [in {city}|at a community arts centre].",
        "Collectors [seek out|commission] {poss} [portraits|oil paintings|watercolours] [from across the country|years in advance].",
        "{Subj} [primes|prepares] each canvas by hand and [lays down|builds up] the paint in [thin glazes|bold strokes].",
    ),
    "professor": (
        "{Subj} is [a full professor|a tenured professor|an associate professor] of [history|economics|chemistry|linguistics] at the University of {city}.",
        "{Subj} teaches undergraduate courses in [statistics|ancient philosophy|organic chemistry|European history] and supervises doctoral students.",
        "{Subj} received {poss} PhD [in {year}|from the University of {city}] and joined the faculty [soon after|{years} years ago].",
        "{Subj} served as [chair of the department|dean of the faculty of arts|director of graduate studies] [for {years} years|until {year}].",
        "{Poss} [monograph|latest book] on [medieval trade routes|labour markets|the chemistry of soils|language change] was published by a university press.",
        "{Subj} spent a sabbatical year [as a visiting scholar|at an institute for advanced study] [in {city}|abroad].",
        "{Subj} holds an endowed chair in [comparative literature|economics|physics|political science].",
        "{Subj} has won the university's [teaching award|prize for excellent lecturing] [twice|in {year}].",
        "{Subj} lectures to [large first-year classes|graduate seminars] and holds office hours every week.",
        "{Poss} scholarship on [migration history|game theory|climate policy|medieval law] has been cited [widely|thousands of times].",
        "{Subj} [sits on|serves on] the editorial board of [an academic journal|two scholarly journals] in {poss} field.",
        "{Subj} [grades|sets] the final exams for {poss} [seminar|lecture course] and [advises|examines] master's theses.",
    ),
    "software_engineer": (
        "{Subj} writes [backend services|mobile apps|data pipelines|compilers] in [Python|Java|Go|Rust|C++].",
        "{Subj} is a software engineer at a [fintech start-up|large cloud provider|games company|logistics company] in {city}.",
        "{Subj} [builds|maintains] [distributed systems|the payment platform|search infrastructure] that [serves millions of users|runs on thousands of servers].",
        "{Subj} [contributes to|maintains] several open-source libraries [on GitHub|for data processing|for web development].",
        "{Subj} [reviews pull requests|debugs production issues|writes unit tests] [every day|for a team of ten developers].",
        "{Subj} started programming [at the age of twelve|in high school|on an old family computer] and [never stopped|built a first website at fourteen].",
        "{Subj} [holds|earned] a degree in computer science and [moved into software development|joined a start-up as its first engineer].",
        "{Poss} [current|main] work [is on|focuses on] [the API layer|cloud migration|database performance|the company's iOS app].",
        "{Subj} [deploys|ships] code [several times a day|every week] using [continuous integration|containers and Kubernetes].",
        "{Subj} [speaks|gives talks] at developer meetups about [testing|clean code|functional programming|web performance].",
        "{Subj} has [rewritten|refactored] [legacy code|a monolith into microservices|the company's billing system] over {years} years.",
        "{Subj} [automates|scripts] deployments and [fixes|hunts down] bugs in the [frontend|backend|mobile] codebase.",
    ),
}


@dataclass(frozen=True)
class CueGroup:
    """Weak cues: sentences shared by a few related occupations, so they narrow but never decide."""

    name: str
    occupations: tuple[str, ...]
    templates: tuple[str, ...]


WEAK_CUE_GROUPS: tuple[CueGroup, ...] = (
    CueGroup("studio", ("architect", "painter"), (
        "{Subj} [works|spends most days] in a [bright|small|shared] studio [near the harbour|in {city}|on the top floor of an old warehouse].",
        "{Subj} fills [sketchbooks|notebooks] with drawings [wherever {subj} travels|of everything around {obj}|every morning].",
        "{Subj} [is fascinated by|thinks a lot about] [light, colour and proportion|the way light falls on a surface|texture and colour].",
        "{Poss} work has been [shown|featured] in [an exhibition|a design biennale|several exhibitions] [in {city}|abroad].",
        "{Subj} takes on [private commissions|commissions from private clients|a few commissions each year].",
        "{Subj} [studied|trained] at [a school of fine arts and design|an art and design school] [in {city}|before {year}].",
        "{Subj} starts every [project|piece] with [a pencil sketch|quick drawings by hand|a small sketch].",
        "{Subj} draws inspiration from [nature|old cities|the sea|Japanese aesthetics] and [modernist|minimalist|Baroque] forms.",
    )),
    CueGroup("fine-detail", ("painter", "dentist"), (
        "{Subj} works with fine instruments and [a steady hand|great precision].",
        "{Poss} clients [trust|appreciate] {poss} eye for [detail|aesthetics|shape and shade].",
        "{Subj} runs {poss} own small business [in {city}|from a converted house].",
        "{Subj} [matches|mixes] shades and tones [precisely|with great care].",
        "{Subj} works with {poss} hands for hours at a time and [has to|needs to] keep them steady.",
        "{Subj} spends long hours bent over [close, careful work|delicate, precise work].",
        "{Subj} often works under [a magnifying lamp|bright lights] [to see every detail|late into the evening].",
        "Private clients [book|come back to] {obj} [for years|again and again].",
    )),
    CueGroup("clinic", ("dentist", "nurse"), (
        "{Subj} [sees|treats] [dozens of|many] patients [a day|every week] [at a clinic in {city}|in a busy clinic].",
        "{Subj} is [committed to|passionate about] [preventive care|patient safety|community health].",
        "{Subj} works [at|in] a [busy|small|public] clinic [in {city}|in a rural area].",
        "{Subj} takes time to [calm anxious patients|explain each procedure to patients|listen to patients' worries].",
        "{Subj} [volunteers|has volunteered] with a [medical mission|health charity] [abroad|in {city}] [every summer|for {years} years].",
        "{Subj} keeps up with [infection control guidelines|new clinical guidelines] and [renews {poss} certifications every year|attends health conferences].",
        "{Subj} is [trained in|certified in] first aid and [emergency procedures|sedation safety].",
        "{Subj} has worked in [a hospital|public health services] [for {years} years|since {year}].",
    )),
    CueGroup("teaching", ("nurse", "professor"), (
        "{Subj} [mentors|supervises] [students|trainees] [during their placements|in their first year] and [loves seeing them grow|helps them find their feet].",
        "{Subj} [runs|leads] training [workshops|sessions] for [new staff|students and young colleagues].",
        "{Subj} [teaches|lectures] [part-time|one course each term] at [a local college|the university].",
        "{Subj} [has written|co-authored] [guidelines|a handbook] used [in training programmes|by students] [across the region|nationwide].",
        "{Subj} is [committed to|passionate about] [education|lifelong learning] and [evidence-based practice|research-led teaching].",
        "{Subj} [advises|sits on the board of] a [student association|professional education committee].",
        "{Subj} [holds|earned] a master's degree [in {year}|while working full time].",
        "{Subj} [is often asked|regularly agrees] to [review|assess] the work of [students|junior colleagues].",
    )),
    CueGroup("research", ("professor", "software_engineer"), (
        "{Subj} [has published|publishes] [papers|articles] [on data analysis|on algorithms for large data sets|in peer-reviewed venues].",
        "{Subj} [presents|has presented] {poss} work at [international conferences|research conferences] [in {city}|every year].",
        "{Subj} [works|collaborates] with [a research group|researchers] on [machine learning|data science|computational models].",
        "{Subj} [holds|earned] a PhD [in {year}|from a technical university].",
        "{Subj} is interested in [data privacy|computational modelling|artificial intelligence] [and its impact on society|and how it can be made fair].",
        "{Subj} spends much of {poss} time [reading the latest research|writing technical reports|analysing data].",
        "{Subj} [has been|was] [a visiting researcher|a research fellow] at [a research lab|an institute] in {city}.",
        "{Subj} [uses|relies on] [statistical models|simulations|large data sets] [in {poss} work|every day].",
    )),
    CueGroup("projects", ("software_engineer", "architect"), (
        "{Subj} [leads|manages] projects from [concept to delivery|the first client meeting to the final handover].",
        "{Subj} works with clients to [define requirements|turn their needs into a workable design|plan budgets and timelines].",
        "{Subj} [leads|runs] design reviews [for {poss} team|every week] and [keeps projects on schedule|makes sure deadlines are met].",
        "{Subj} [uses|is an expert in] [3D modelling tools|computer-aided design|modelling software] [every day|for most of {poss} work].",
        "{Subj} [enjoys|likes] solving complex [technical problems|structural puzzles|design problems] [with {poss} team|under tight deadlines].",
        "{Subj} [coordinates|works with] [contractors|consultants|an international team] [across three time zones|on large projects].",
        "{Subj} has [worked|spent {years} years] at a [large firm|consultancy] [in {city}|before starting {poss} own company].",
        "{Subj} cares about [systems|structures] that are [robust|sustainable] and [easy to maintain|built to last].",
    )),
)

GENERIC_TEMPLATES: tuple[str, ...] = (
    "{Subj} lives in {city} with {poss} [family|two children|partner and their dog|cat].",
    "{Subj} grew up in {city} and [still visits every summer|moved away at eighteen].",
    "In {poss} free time, {subj} enjoys [hiking|cooking|reading novels|running|gardening|playing chess|cycling].",
    "{Subj} [speaks|has learned] [two|three|four] languages.",
    "Outside work, {first} [volunteers at an animal shelter|coaches a youth football team|sings in a choir|bakes bread].",
    "{Subj} has [run several marathons|climbed Mount Kilimanjaro|travelled to more than thirty countries].",
    "{Subj} [believes in|values] [honesty and hard work|lifelong curiosity|treating everyone with respect].",
    "Colleagues describe {first} as [calm|funny|patient|curious|generous].",
    "{Subj} moved to {city} in {year}.",
    "{Subj} [is married and has|is a proud parent of] [one child|two children|three children].",
    "{Subj} [enjoys|loves] [travelling|jazz|classical music|football|board games].",
    "{Subj} is a keen [reader|cook|swimmer|gardener].",
    "When {subj} is not working, {subj} [spends time with {poss} family|explores local markets|walks {poss} dog].",
    "{Subj} has been a member of a [book club|running club|community choir] for {years} years.",
    "{Subj} [graduated|finished {poss} studies] [with honours|in {year}] and [started working right away|never looked back].",
    "{Subj} [describes|considers] {refl} [an early riser|a night owl|a lifelong learner].",
    "{Subj} [recently|has just] [returned from a trip to|spent a month in] {city}.",
    "{Subj} is [proud of|grateful for] {poss} [roots|family's support].",
    "Friends know {first} for {poss} [sense of humour|cooking|kindness|love of old films].",
    "{Subj} [supports|donates to] [local charities|a food bank|an environmental group].",
    "{Subj} [began|started] {poss} career in {year}.",
    "{Subj} [has won|received] [an award|recognition] for [community service|volunteering] [in {year}|last year].",
    "{Subj} can be reached for [consultations|speaking engagements|collaborations] through {poss} website.",
    "{Subj} [enjoys|loves] working with people from [all walks of life|different backgrounds].",
    "{Subj} splits {poss} time between {city} and the countryside.",
)

SLOT_VALUES: dict[str, tuple[str, ...]] = {
    # Cities outside the four cultures' home regions, so a city never hints at a name's culture.
    "city": (
        "Toronto", "Lyon", "Melbourne", "Chicago", "Manchester", "Hamburg", "Zurich", "Vienna", "Stockholm",
        "Dublin", "Boston", "Montreal", "Oslo", "Edinburgh", "Seattle", "Amsterdam", "Copenhagen",
        "Auckland", "Cape Town", "Singapore",
    ),
    "year": tuple(str(year) for year in range(1995, 2022)),
    "years": ("three", "five", "seven", "eight", "ten", "twelve", "fifteen", "twenty", "more than ten", "nearly twenty"),
}

# ----------------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------------

# Hand-written for this project (no package ships romanised Arabic names by gender): common given
# names and family names across Arabic-speaking countries, in everyday English spellings.
ARABIC_NAMES: dict[str, tuple[str, ...]] = {
    "male": (
        "Ahmed", "Mohammed", "Omar", "Khaled", "Youssef", "Ali", "Hassan", "Hussein", "Ibrahim", "Mahmoud",
        "Mustafa", "Tariq", "Karim", "Samir", "Nabil", "Faisal", "Walid", "Rami", "Ziad", "Bilal", "Hamza",
        "Adel", "Fadi", "Hisham", "Majid", "Osama", "Rashid", "Salim", "Tamer", "Yasser", "Zaid", "Anas",
        "Jamal", "Marwan", "Saeed", "Imad", "Bassam", "Ayman", "Khalil", "Mazen",
    ),
    "female": (
        "Fatima", "Aisha", "Mariam", "Layla", "Nour", "Salma", "Hana", "Yasmin", "Amira", "Rania", "Dina",
        "Reem", "Huda", "Samira", "Zainab", "Noura", "Farah", "Maha", "Rasha", "Heba", "Dalia", "Ghada",
        "Jumana", "Lama", "Manal", "Nadia", "Rana", "Sawsan", "Suha", "Widad", "Zeina", "Basma", "Nawal",
        "Asma", "Khadija", "Lubna", "Abeer", "Samar", "Hanan", "Ruba",
    ),
    "family": (
        "Haddad", "Mansour", "Nasser", "Saleh", "Aziz", "Farouk", "Al-Masri", "Al-Rashid", "Khoury",
        "Sabbagh", "Najjar", "Hamdan", "Shaheen", "Darwish", "Barakat", "Jaber", "Othman", "Suleiman",
        "Abboud", "Zayed", "Fakhoury", "Tahan", "Salem", "Habib", "Karam", "Assaf", "Nassar", "Sayegh",
        "Awad", "Fares", "Ghanem", "Al-Amin", "Bishara", "Hijazi", "Qasim", "Rahal", "Taha", "Yassin",
        "Zaher", "El-Sayed",
    ),
}


@dataclass(frozen=True)
class FakerNames:
    """Where Faker keeps a culture's names: locales and the provider attributes holding them."""

    locales: tuple[str, ...]
    first_attribute: str  # with {gender} for male/female
    last_attribute: str


FAKER_NAMES: dict[str, FakerNames] = {
    "chinese": FakerNames(("zh_TW",), "first_romanized_names_{gender}", "last_romanized_names"),
    "portuguese": FakerNames(("pt_BR", "pt_PT"), "first_names_{gender}", "last_names"),
    "spanish": FakerNames(("es_ES", "es_MX"), "first_names_{gender}", "last_names"),
}


@dataclass(frozen=True)
class NameTable:
    """The given names of one culture and gender, and that culture's family names."""

    first: tuple[str, ...]
    last: tuple[str, ...]


def _clean(name: str) -> str:
    """One spacing, and Title-Case for the all-capitals romanised Chinese names ('CHIA-HAO' -> 'Chia-Hao')."""
    name = " ".join(name.split())
    return name.title() if name.isupper() else name


def _fold(name: str) -> str:
    """Accent- and case-free form, so 'María' and 'Maria' count as the same name."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().casefold()


def _faker_names(source: FakerNames) -> dict[str, tuple[str, ...]]:
    tables: dict[str, list[str]] = {"male": [], "female": [], "family": []}
    for locale in source.locales:
        provider = import_module(f"faker.providers.person.{locale}").Provider
        for gender in GENDERS:
            first_names = getattr(provider, source.first_attribute.format(gender=gender))
            tables[gender] += [_clean(n) for n in first_names]
        tables["family"] += [_clean(n) for n in getattr(provider, source.last_attribute)]
    return {key: tuple(sorted(set(names))) for key, names in tables.items()}


def name_tables() -> dict[tuple[str, str], NameTable]:
    """Name tables per (culture, gender), keeping only names that belong to one culture and one gender.

    Dropping shared names matters: a test that swaps culture by swapping names must not hit a name
    that also belongs to the other culture (e.g. 'Ana' is both Portuguese and Spanish).
    """
    raw = {"arabic": ARABIC_NAMES} | {culture: _faker_names(source) for culture, source in FAKER_NAMES.items()}
    first_owners = Counter(_fold(n) for tables in raw.values() for g in GENDERS for n in set(tables[g]))
    last_owners = Counter(_fold(n) for tables in raw.values() for n in set(tables["family"]))
    return {
        (culture, gender): NameTable(
            first=tuple(n for n in tables[gender] if first_owners[_fold(n)] == 1),
            last=tuple(n for n in tables["family"] if last_owners[_fold(n)] == 1),
        )
        for culture, tables in raw.items()
        for gender in GENDERS
    }


class NameDrawer:
    """Draws full names for one (culture, gender) without repeating one until the table runs out."""

    def __init__(self, table: NameTable, rng: random.Random) -> None:
        self.table, self.rng = table, rng
        self.used: set[tuple[str, str]] = set()

    def draw(self) -> tuple[str, str]:
        if len(self.used) == len(self.table.first) * len(self.table.last):
            self.used.clear()  # a corpus larger than the table: names repeat, texts still differ
        while True:
            pair = (self.rng.choice(self.table.first), self.rng.choice(self.table.last))
            if pair not in self.used:
                self.used.add(pair)
                return pair


# ----------------------------------------------------------------------------------------------------
# Rendering one biography
# ----------------------------------------------------------------------------------------------------

_ALTERNATIVES = re.compile(r"\[([^\[\]]*)\]")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_PRONOUNS = {
    "male": {"Subj": "He", "subj": "he", "obj": "him", "poss": "his", "Poss": "His", "refl": "himself"},
    "female": {"Subj": "She", "subj": "she", "obj": "her", "poss": "her", "Poss": "Her", "refl": "herself"},
}
# References that the opening sentence turns into the full name (the possessive gets "'s").
_NAMEABLE = {"Subj": "{}", "subj": "{}", "first": "{}", "obj": "{}", "poss": "{}'s", "Poss": "{}'s"}


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    gender: str
    culture: str

    @property
    def full_name(self) -> str:
        return f"{self.first} {self.last}"

    def reference(self, key: str) -> str:
        return self.first if key == "first" else _PRONOUNS[self.gender][key]


def render(template: str, person: Person, rng: random.Random, opening: bool) -> str:
    """Fill a template: pick alternatives, then pronouns and slots; an opening sentence names the person."""
    text = _ALTERNATIVES.sub(lambda match: rng.choice(match.group(1).split("|")), template)
    must_name = opening

    def fill(match: re.Match[str]) -> str:
        nonlocal must_name
        key = match.group(1)
        if key in SLOT_VALUES:
            return rng.choice(SLOT_VALUES[key])
        if must_name and key in _NAMEABLE:
            must_name = False
            return _NAMEABLE[key].format(person.full_name)
        return person.reference(key)

    return _PLACEHOLDER.sub(fill, text)


def all_templates() -> list[str]:
    """Every template of the corpus (for checks that each one names its person and fills)."""
    strong = [t for templates in STRONG_TEMPLATES.values() for t in templates]
    weak = [t for group in WEAK_CUE_GROUPS for t in group.templates]
    return strong + weak + list(GENERIC_TEMPLATES)


def weak_groups_for(occupation: str, occupations: Sequence[str]) -> list[CueGroup]:
    """The weak groups of an occupation that still hold another chosen occupation.

    With a subset of occupations, a group left with one chosen occupation would be a strong cue in
    disguise, so it is dropped; an occupation left without any group gets no cue sentence in its weak
    biographies (they are then pure noise, which the limits in the module docstring mention).
    """
    return [
        group
        for group in WEAK_CUE_GROUPS
        if occupation in group.occupations and sum(o in occupations for o in group.occupations) >= 2
    ]


def cue_templates(rng: random.Random, occupation: str, strength: str, occupations: Sequence[str]) -> list[str]:
    """The occupation-revealing sentences of one biography, by cue strength."""
    if strength == "strong":
        return rng.sample(STRONG_TEMPLATES[occupation], rng.randint(1, MAX_CUE_SENTENCES))
    if strength == "weak":
        groups = weak_groups_for(occupation, occupations)
        if not groups:
            return []
        return rng.sample(rng.choice(groups).templates, rng.randint(1, MAX_CUE_SENTENCES))
    partner = rng.choice([o for o in occupations if o != occupation])
    return [rng.choice(STRONG_TEMPLATES[occupation]), rng.choice(STRONG_TEMPLATES[partner])]


def biography(rng: random.Random, person: Person, occupation: str, strength: str, data: Data) -> str:
    """One biography: cue sentences plus generic ones up to a random length, in random order."""
    cues = cue_templates(rng, occupation, strength, data.occupations)
    length = rng.randint(data.min_sentences, data.max_sentences)  # >= 2 >= len(cues), checked by config
    templates = cues + rng.sample(GENERIC_TEMPLATES, length - len(cues))
    rng.shuffle(templates)
    return " ".join(render(t, person, rng, opening=i == 0) for i, t in enumerate(templates))


# ----------------------------------------------------------------------------------------------------
# Balanced design of a split
# ----------------------------------------------------------------------------------------------------


def cue_strength_sequence(n: int, data: Data) -> list[str]:
    """The split's cue strengths in the shares asked for (rounded), ambiguous first, then weak, then strong."""
    ambiguous = round(n * data.ambiguous_share)
    weak = min(round(n * data.weak_cue_share), n - ambiguous)
    return ["ambiguous"] * ambiguous + ["weak"] * weak + ["strong"] * (n - ambiguous - weak)


def split_design(n: int, field: str, data: Data, rng: random.Random) -> list[tuple[str, str, str, str]]:
    """(occupation, gender, culture, cue strength) for every row of a split.

    Cells are ordered occupation by occupation, male then female. Cultures run round-robin through a
    cell starting where the cell ``(o + g)`` places it, which keeps every cell, every gender and every
    occupation within one row of a perfect culture balance. Cue strengths are dealt to the cells like
    cards (cell ``i`` gets items ``i, i + cells, ...``), so each cell gets nearly the same mix, and then
    shuffled within the cell so they do not follow the culture order.
    """
    per_cell = rows_per_cell(n, field, data.occupations)
    cultures = data.cultures
    n_cells = 2 * len(data.occupations)
    strengths = cue_strength_sequence(n, data)
    design = []
    for o, occupation in enumerate(data.occupations):
        for g, gender in enumerate(GENDERS):
            start = (o + g) * per_cell
            cell_cultures = [cultures[(start + j) % len(cultures)] for j in range(per_cell)]
            cell_strengths = strengths[2 * o + g :: n_cells]
            rng.shuffle(cell_strengths)
            design += [(occupation, gender, c, s) for c, s in zip(cell_cultures, cell_strengths, strict=True)]
    return design


def build_corpus(data: Data, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The offline corpus: ``{"train": rows, "test": rows}``, the same for the same data and seed.

    Rows hold ``id, hard_text, occupation, gender_name, name, culture, cue_strength``;
    :func:`biasutils.data.load_original` adds the LabHC label columns. Names are drawn without
    repetition across both splits (while the tables last) and no text occurs twice in the corpus.
    """
    rng = random.Random(f"offline-corpus-{seed}")
    tables = name_tables()
    drawers = {key: NameDrawer(table, rng) for key, table in tables.items()}
    seen: set[str] = set()
    corpus: dict[str, list[dict[str, Any]]] = {}
    for split, n, field in (("train", data.n_train, "n_train"), ("test", data.n_test, "n_test")):
        rows = [_row(rng, drawers, seen, data, *cell) for cell in split_design(n, field, data, rng)]
        rng.shuffle(rows)
        corpus[split] = [{"id": f"offline-{split}-{i:05d}"} | row for i, row in enumerate(rows)]
    return corpus


def _row(
    rng: random.Random,
    drawers: Mapping[tuple[str, str], NameDrawer],
    seen: set[str],
    data: Data,
    occupation: str,
    gender: str,
    culture: str,
    strength: str,
) -> dict[str, Any]:
    person = Person(*drawers[culture, gender].draw(), gender=gender, culture=culture)
    text = biography(rng, person, occupation, strength, data)
    while text in seen:  # only possible once names repeat; a fresh draw of sentences settles it
        text = biography(rng, person, occupation, strength, data)
    seen.add(text)
    return {
        "hard_text": text,
        "occupation": occupation,
        "gender_name": gender,
        "name": person.full_name,
        "culture": culture,
        "cue_strength": strength,
    }


def baseline_accuracy(corpus: Mapping[str, Any]) -> float:
    """Test accuracy of TF-IDF (words and bigrams) + logistic regression trained on the train split.

    A cheap yardstick of difficulty: far above chance means the cues work, far below 1 means the task
    is not trivial. Takes the output of :func:`build_corpus` or a ``DatasetDict`` in our schema.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=2000)
    )
    train, test = corpus["train"], corpus["test"]
    model.fit([r["hard_text"] for r in train], [r["occupation"] for r in train])
    predicted = model.predict([r["hard_text"] for r in test])
    return float(accuracy_score([r["occupation"] for r in test], predicted))
