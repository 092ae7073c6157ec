"""Findings of examinations and reports: an anatomical structure and what is said of it.

"Tricuspid valve is normal", "lungs clear to auscultation", "thickened aortic valve", "abdomen
soft, nontender, nondistended": statements a problem list never holds, but that an exam or an
echo/imaging report is made of, and that ConText must see ("no thickened valve"). Each becomes a
``finding`` entity whose ``values`` carry ``structure`` (canonical) and ``qualifiers`` (as
written, lowercase); bedside template phrases ("alert and oriented", "PERRLA", "regular rate and
rhythm") are findings too, with ``structure`` naming the system examined.

Vocabulary written here from general knowledge of examination and report templates, not from any
evaluation set. No open terminology in a package covers anatomy with a licence and size we
accept, so findings carry no code (``code_system`` None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from trillium.medical.records.lexicon import _parse
from trillium.medical.records.text import Token

STRUCTURES = _parse("""
heart: cardiac | heart size | cardiac silhouette
left ventricle: left ventricular | lv | left ventricular cavity
right ventricle: right ventricular | rv | right ventricular cavity
left atrium: left atrial | la
right atrium: right atrial | ra
ventricles: biventricular | ventricular
atria: biatrial
interventricular septum: septum | septal | interatrial septum | anterior septum | inferior septum
ventricular wall: anterior wall | inferior wall | posterior wall | lateral wall | apical wall | inferolateral wall
aortic valve: aortic valve leaflets
mitral valve: mitral valve leaflets | mitral leaflets
tricuspid valve:
pulmonic valve: pulmonary valve
aortic root: aortic root size | ascending aorta
aorta: thoracic aorta | abdominal aorta
pulmonary artery: pulmonary arteries | main pulmonary artery
pericardium: pericardial | pericardial effusion
inferior vena cava: ivc
lungs: lung | lung fields | lung sounds | breath sounds | chest | thorax | pulmonary
pleura: pleural space
mediastinum: mediastinal contours | hilar contours
diaphragm: hemidiaphragm | right hemidiaphragm | left hemidiaphragm | hemidiaphragms
abdomen: abdominal | belly
bowel sounds: bowel
liver: hepatic | liver parenchyma
spleen: splenic
gallbladder: gall bladder
pancreas:
kidneys: kidney | renal | right kidney | left kidney
bladder: urinary bladder | bladder wall
adrenal glands: adrenal gland | adrenals
esophagus: esophageal mucosa | gastroesophageal junction | esophagogastric junction
stomach: gastric mucosa | gastric wall | stomach wall
duodenum: duodenal bulb | duodenal mucosa
small bowel: small intestine | proximal small bowel | jejunum
terminal ileum: ileum | ileal mucosa
colon: colonic mucosa | large bowel | rectum | sigmoid colon | cecum
portal vein: main portal vein | portal venous system
bile ducts: common bile duct | intrahepatic bile ducts | biliary tree
head: skull | scalp
neck: cervical spine
brain: brain parenchyma | ventricles and sulci | sulci
cranial nerves: cranial nerves ii through xii | cranial nerves 2-12 | cn ii-xii
pupils: pupil
extraocular movements: extraocular muscles | eye movements
conjunctivae: conjunctiva | sclerae | sclera
tympanic membranes: tympanic membrane | tms | tm
oropharynx: pharynx | posterior pharynx | throat | hypopharynx | larynx
mucous membranes: oral mucosa | mucosa
nose: nasal mucosa | paranasal sinuses | sinuses
thyroid: thyroid gland
lymph nodes: lymph node | nodes
skin: skin turgor
extremities: extremity | lower extremities | upper extremities | legs | arms | lower extremity | upper extremity
pulses: pulse | distal pulses | peripheral pulses | radial pulses | pedal pulses | dorsalis pedis pulses
joints: joint | joint space | range of motion
spine: lumbar spine | thoracic spine | vertebral bodies | disc spaces | disk spaces
motor strength: strength | motor | motor exam
sensation: sensory | sensory exam | light touch sensation
reflexes: deep tendon reflexes | patellar reflexes | dtrs
gait:
mental status: mentation | speech | affect | mood
incision: incisions | wound | surgical site
heart rhythm: rhythm | heart rate and rhythm | rate and rhythm
vital signs: vitals
soft tissues: soft tissue
bones: osseous structures | bony structures
# added in the second round, from general knowledge of exam and report templates: limbs and
# joints, neuro-axis and pelvic structures, airways, vessels, the EKG's waves, mental status
trachea: airway | airways | central airways | bronchi | bronchus
hila: hilum | hilar regions | hilar region | hilar structures
wrist: wrists
hand: hands | fingers | finger | thumb
elbow: elbows
shoulder: shoulders | acromioclavicular joint | glenohumeral joint
hip: hips | hip joint
knee: knees | knee joint
ankle: ankles
foot: feet | toes | toe | heel
back: lower back | low back | paraspinal muscles
pelvis: hemipelvis | sacrum | coccyx | sacroiliac joints | pubic symphysis
spinal cord: cord | conus | conus medullaris | thecal sac | cauda equina
cisterns: basal cisterns | cisterna magna
orbits: orbit | globes | globe
eyes: eye | eyelids | lids
ears: ear | external auditory canals | ear canals
uterus: endometrium | endometrial stripe | myometrium
cervix: cervix uteri
ovaries: ovary | adnexa | adnexae
prostate: prostate gland
testes: testicles | testicle | testis | scrotum
breasts: breast
veins: vein | deep veins | femoral vein | common femoral vein | popliteal vein | jugular veins | neck veins
carotid arteries: carotid artery | carotids
st segments: st segment | st-segments | st-t waves | t waves | t wave | qrs complex | qrs complexes | p waves
thought process: thoughts | thought content | insight | judgment | insight and judgment | memory
blood pressure: blood pressures
heart sounds: s1 and s2 | s1 s2
muscle tone: tone | muscle bulk | bulk
intervertebral discs: intervertebral disc | disc | discs | disk | disks
""")
"""Structures as written in exams and reports ("left ventricular" as "left ventricle")."""

def all_structures() -> Mapping[str, tuple[str, ...]]:
    """The hand list, then ICD-10-CM's sites not already written in it."""
    from trillium.medical.records.terminology import default_index

    known = {t for terms in STRUCTURES.values() for t in terms}
    merged = dict(STRUCTURES)
    for site in default_index().sites_:
        if site not in known:
            merged[site] = (site,)
    return merged

ATTRIBUTES = frozenset(
    """size sizes function functions thickness wall walls cavity systolic diastolic global overall segmental
    regional motion contour contours caliber appearance configuration dimensions dimension echotexture
    texture pressure position flow filling density attenuation signal structure structures
    prosthesis prostheses leaflet leaflets cusp cusps region regions segment segments margin margins
    border borders surface surfaces visualized portion portions
    """.split())  # noqa: SIM905  # a word list reads better than quoted strings
"""Words between a structure and its qualifier that name what of it is described ("left
ventricular wall thickness is normal")."""

LINKS = frozenset(
    """is are was were be been appears appear appeared seems seem seemed looks look looked remains remain
    remained to otherwise overall grossly mildly moderately severely markedly slightly minimally
    relatively entirely essentially somewhat very extremely diffusely globally and both bilaterally
    did does do normally currently now still again found noted felt thought
    , :""".split())  # noqa: SIM905
"""Copulas and degree adverbs allowed between a structure and its qualifier."""

QUALIFIERS = frozenset(
    """normal abnormal unremarkable clear intact supple soft nontender non-tender tender nondistended
    non-distended distended thickened enlarged dilated nondilated non-dilated small large hypokinetic
    akinetic dyskinetic hyperkinetic hypertrophied calcified sclerotic patent occluded stenotic
    elevated depressed decreased increased reduced preserved diminished absent present equal unequal
    reactive round regular irregular moist dry pink pale erythematous injected edematous warm cool cold
    atraumatic normocephalic symmetric asymmetric full fluent coherent appropriate benign stable
    unchanged negative positive good poor weak strong brisk hyperactive hypoactive palpable nonpalpable
    mottled cyanotic anicteric icteric flat flattened collapsed plethoric tortuous ectatic healing healed
    well-healed clean swollen paradoxical hypoplastic mobile restricted prolapsing unremarkably
    grossly-normal wnl
    antalgic ataxic shuffling steady unsteady logical linear goal-directed organized disorganized
    tangential controlled uncontrolled distensible distensable compressible noncompressible concave
    convex widened narrowed narrow wide thin thinned atrophic friable ulcerated obstructed
    unobstructed nonobstructive non-obstructive obscured displaced nondisplaced aligned malaligned
    effaced compressed deviated midline spastic flaccid rigid tense labile flat blunted
    """.split())  # noqa: SIM905
"""What is said of a structure: normal, abnormal, size, texture, tenderness, motion."""

TEMPLATE_FINDINGS = _parse("""
# bedside exam template phrases, each naming the system examined
mental status: alert | awake | oriented | alert and oriented | awake and alert | a&o | aox3 | a&ox3 | oriented x3 | oriented x 3 | oriented times three | lucid | cooperative | confused | lethargic | agitated | somnolent | obtunded
general appearance: well-appearing | well appearing | ill-appearing | acutely ill | comfortable | well-nourished | well nourished | well-developed
temperature: afebrile
conjunctivae: anicteric | anicteric sclerae | sclerae anicteric
pupils: perrla | perrl | perla | pupils equal round and reactive to light | pupils equal and reactive
extraocular movements: eomi | extraocular movements intact | conjugate gaze
head: normocephalic | atraumatic | ncat | normocephalic atraumatic
neck: supple
heart rhythm: regular rate and rhythm | rrr | normal sinus rhythm | sinus rhythm | nsr | irregularly irregular | sinus tachycardia | sinus bradycardia
lungs: clear to auscultation | clear to auscultation bilaterally | ctab | cta | clear to auscultation and percussion
abdomen: nontender | nondistended | non-tender | non-distended | ntnd
bowel sounds: positive bowel sounds | normoactive bowel sounds | bowel sounds present | hypoactive bowel sounds | hyperactive bowel sounds
neurologic: neurologically intact | nonfocal | non-focal | grossly intact
vital signs: hemodynamically stable | vital signs stable | vss | stable vital signs | afebrile vital signs stable
functional status: ambulating independently | ambulates independently | ambulating without assistance | ambulating with assistance | ambulating with a walker | ambulatory | tolerating p.o. | tolerating po | tolerating p.o. intake | tolerating po intake | tolerating diet | tolerating a regular diet | tolerating regular diet | voiding without difficulty | voiding spontaneously | voiding well
""")


CONNECTORS = frozenset(", and or the both in of at within along as well".split())  # noqa: SIM905
"""Words that join structures described together ("ventricles, sulci and cisterns are normal",
"lymph nodes in the mediastinum and hilar regions are calcified"): up to three in a row."""

IMPRESSION_SYSTEMS = {
    "cardiopulmonary": "chest", "intrathoracic": "chest", "thoracic": "chest", "cardiac": "heart",
    "pulmonary": "lungs", "airspace": "lungs", "parenchymal": "parenchyma", "intracranial": "brain",
    "intra-abdominal": "abdomen", "intraabdominal": "abdomen", "abdominal": "abdomen", "pelvic": "pelvis",
    "osseous": "bones", "bony": "bones", "skeletal": "bones", "valvular": "heart valves",
    "pericardial": "pericardium", "pleural": "pleura", "mediastinal": "mediastinum", "hepatic": "liver",
    "renal": "kidneys", "biliary": "bile ducts", "vascular": "vessels", "neurologic": "neurologic",
    "neurological": "neurologic", "sensory": "sensation", "motor": "motor strength", "wall": "ventricular wall",
}
"""Adjectives that name the system of a report's summary statement ("no acute cardiopulmonary
process", "no focal sensory or motor deficits"), with the structure each stands for."""

IMPRESSION_PATHOLOGY = frozenset(
    """ischemic degenerative inflammatory postoperative post-operative postsurgical post-surgical arthritic
    osteoarthritic spondylotic fibrotic emphysematous atelectatic postinflammatory post-inflammatory
    chronic""".split())  # noqa: SIM905
"""Adjectives of a kind of change ("degenerative changes", "acute ischemic changes")."""

IMPRESSION_MODIFIERS = frozenset(
    "acute focal significant radiographic gross definite suspicious worrisome discrete motion".split())  # noqa: SIM905
"""Degree words of a summary statement; with no system they make one only before a general head
("no acute abnormality"), not "other findings" or "new changes"."""

IMPRESSION_HEADS = frozenset(
    """abnormality abnormalities disease process processes pathology finding findings change changes deficit
    deficits""".split())  # noqa: SIM905
_GENERAL_HEADS = frozenset(
    """abnormality abnormalities process processes pathology findings disease deficit deficits""".split())  # noqa: SIM905


NOMINALS = frozenset(
    """dilation dilatation thickening narrowing elevation flattening enlargement calcification calcifications
    enhancement effacement distension distention atrophy opacification desiccation bulge bulges bulging
    """.split())  # noqa: SIM905
"""What is said of a structure as a noun: "aortic root dilation", "thickening of the bladder wall",
"calcification throughout the spleen"."""

_NOMINAL_PREPOSITIONS = frozenset("of in within throughout along involving at".split())  # noqa: SIM905
_SITE_WORDS = frozenset(
    """the a right left bilateral both distal proximal mid upper lower medial lateral anterior posterior
    entire whole""".split())  # noqa: SIM905


def qualifier_length(low: Sequence[str], j: int) -> int:
    """Tokens of the qualifier at ``j`` (0: none): a word of ``QUALIFIERS``, "within normal limits",
    a reflex grade ("2+") or a strength grade ("5/5")."""
    if j >= len(low):
        return 0
    if low[j] in QUALIFIERS:
        return 1
    if tuple(low[j:j + 3]) == ("within", "normal", "limits"):
        return 3
    if low[j] in {"0", "1", "2", "3", "4"} and j + 1 < len(low) and low[j + 1] == "+":
        return 2
    if low[j] in {"0", "1", "2", "3", "4", "5"} and tuple(low[j + 1:j + 3]) == ("/", "5"):
        return 3
    return 0


def read_qualifiers(low: Sequence[str], j: int) -> tuple[list[str], int]:
    """The run of qualifiers from ``j`` ("soft, nontender, and nondistended") and its last token
    (``j - 1`` when there is none); grades are written whole ("2+", "5/5")."""
    quals: list[str] = []
    end = j - 1
    while (size := qualifier_length(low, j)):
        quals.append(("" if low[j].isdigit() else " ").join(low[j:j + size]))
        end = j + size - 1
        j += size
        k = j
        while k < len(low) and low[k] in {",", "and", "or"} | LINKS and k - j < 3:
            k += 1
        if qualifier_length(low, k) and not (k > j and low[k].isdigit()):  # a grade after a comma opens the next
            j = k
    return quals, end


class FindingMatcher:
    """Structure + qualifier statements, template phrases and report summary statements over one
    sentence's tokens."""

    def __init__(self) -> None:
        from trillium.medical.records.entities import TermMatcher

        self._structures = TermMatcher(all_structures(), "finding")
        # a template entry's name is the system examined ("lungs"), not a phrase to find
        self._templates = TermMatcher({k: v[1:] for k, v in TEMPLATE_FINDINGS.items()}, "finding")
        self._headers: dict[str, str | None] = {}  # a section title -> the structure it names

    def find(self, tokens: Sequence[Token], header: str | None = None) -> list[tuple[int, int, str, dict]]:
        """(first token, last token inclusive, structure, values) of each finding. ``header``: the
        title of the sentence's section; when it names a structure ("ABDOMEN:", "SKIN:"), qualifiers
        that open the sentence describe it ("ABDOMEN: Soft, nontender." -> abdomen: soft, nontender)."""
        low = [t.lower for t in tokens]
        out: list[tuple[int, int, str, dict]] = []
        opening = self._under_header(low, header)
        if opening is not None:
            out.append(opening)
        for first, last, canonical in self._templates.find(tokens):
            out.append((first, last, canonical, {"structure": canonical,
                                                 "qualifiers": [" ".join(low[first:last + 1])]}))
        structures = self._structures.find(tokens)
        absorbed: set[int] = set()
        for n, (first, last, canonical) in enumerate(structures):
            if n in absorbed:
                continue
            also: list[str] = []
            chain: list[int] = []
            end = last
            for m in range(n + 1, len(structures)):  # "esophagus and gastroesophageal junction were normal"
                nxt_first, nxt_last, nxt_canonical = structures[m]
                gap = low[end + 1:nxt_first]
                if not gap or len(gap) > 3 or any(g not in CONNECTORS for g in gap):
                    break
                chain.append(m)
                if nxt_canonical != canonical and nxt_canonical not in also:
                    also.append(nxt_canonical)
                end = nxt_last
            j = end + 1
            while j < len(low) and j - end <= 6 and (low[j] in ATTRIBUTES or low[j] in LINKS):
                j += 1  # "... wall thickness is mildly ..."
            quals, last_qual = read_qualifiers(low, j)
            if quals:
                end = last_qual
            start = first
            b = first - 1
            while b >= 0 and low[b] in LINKS - {",", "and", "is", "are", "was", "were"}:
                b -= 1
            size = next((w for w in (1, 2, 3) if b - w + 1 >= 0 and qualifier_length(low, b - w + 1) == w), 0)
            if size:  # "thickened aortic valve", "5/5 motor strength"
                quals.insert(0, read_qualifiers(low, b - size + 1)[0][0])
                start = b - size + 1
            elif first >= 2 and low[first - 1] in {"of", "the"}:  # "motion of the mitral valve ... appears normal"
                a = first - 1 - (low[first - 1] == "the")
                if a >= 1 and low[a] == "of" and low[a - 1] in ATTRIBUTES:
                    start = a - 1
            if not quals and end + 1 < len(low) and low[end + 1] in NOMINALS:  # "aortic root dilation"
                end += 1
                quals.append(low[end])
            if not quals and first >= 2:  # "thickening of the bladder wall", "calcification throughout the spleen"
                a = first - 1
                while a > 0 and low[a] in _SITE_WORDS and first - a <= 3:
                    a -= 1
                if a >= 1 and low[a] in _NOMINAL_PREPOSITIONS and low[a - 1] in NOMINALS:
                    start = a - 1
                    quals.append(low[a - 1])
                    while end + 1 < len(low) and low[end + 1] in ATTRIBUTES and end - last < 2:
                        end += 1  # "... of the gallbladder wall"
            if quals:  # the structures it joined are described with it; else each is read on its own
                absorbed.update(chain)
                values: dict = {"structure": canonical, "qualifiers": quals}
                if also:
                    values["also"] = also
                out.append((start, end, canonical, values))
        out.extend(self._summaries(low))
        return out

    def _under_header(self, low: Sequence[str], header: str | None) -> tuple[int, int, str, dict] | None:
        """The finding of a sentence that opens with qualifiers under a section titled by a structure."""
        if not header or not qualifier_length(low, 0):
            return None
        if header not in self._headers:
            from trillium.medical.records.text import tokenize

            head = tokenize(header)
            hits = self._structures.find(head)
            # the whole title must be one structure: not "PAST MEDICAL HISTORY"
            whole = len(hits) == 1 and hits[0][0] == 0 and hits[0][1] == len(head) - 1
            if len(self._headers) > 4096:
                self._headers.clear()
            self._headers[header] = hits[0][2] if whole else None
        canonical = self._headers[header]
        if canonical is None:
            return None
        quals, end = read_qualifiers(low, 0)
        return 0, end, canonical, {"structure": canonical, "qualifiers": quals}

    @staticmethod
    def _summaries(low: Sequence[str]) -> list[tuple[int, int, str, dict]]:
        """Report summary statements: adjectives then a general head ("acute cardiopulmonary
        process", "focal sensory or motor deficits", "degenerative changes")."""
        out: list[tuple[int, int, str, dict]] = []
        for h, word in enumerate(low):
            if word not in IMPRESSION_HEADS:
                continue
            a = h
            systems: list[str] = []
            kinds: list[str] = []
            modifiers = 0
            while a > 0:
                w = low[a - 1]
                if w in IMPRESSION_SYSTEMS:
                    systems.insert(0, IMPRESSION_SYSTEMS[w])
                elif w in IMPRESSION_PATHOLOGY:
                    kinds.insert(0, w)
                elif w in IMPRESSION_MODIFIERS:
                    modifiers += 1
                elif w in {"or", "and", ","} and a >= 2 and low[a - 2] in IMPRESSION_SYSTEMS:
                    pass  # "sensory or motor"
                else:
                    break
                a -= 1
            if a == h or not (systems or kinds or (modifiers and word in _GENERAL_HEADS)):
                continue
            structure = systems[0] if systems else "general"
            values: dict = {"structure": structure, "qualifiers": [" ".join(low[a:h + 1])]}
            out.append((a, h, structure, values))
        return out
