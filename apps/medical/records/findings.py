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

from collections.abc import Sequence

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
""")
"""Structures as written in exams and reports ("left ventricular" as "left ventricle")."""

ATTRIBUTES = frozenset(
    """size sizes function functions thickness wall walls cavity systolic diastolic global overall segmental
    regional motion contour contours caliber appearance configuration dimensions dimension echotexture
    texture pressure position flow filling density attenuation signal structure structures
    """.split())  # noqa: SIM905  # a word list reads better than quoted strings
"""Words between a structure and its qualifier that name what of it is described ("left
ventricular wall thickness is normal")."""

LINKS = frozenset(
    """is are was were be been appears appear appeared seems seem seemed looks look looked remains remain
    remained to otherwise overall grossly mildly moderately severely markedly slightly minimally
    relatively entirely essentially somewhat very extremely diffusely globally and both bilaterally
    ,""".split())  # noqa: SIM905
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
    grossly-normal within-normal-limits wnl
    """.split())  # noqa: SIM905
"""What is said of a structure: normal, abnormal, size, texture, tenderness, motion."""

TEMPLATE_FINDINGS = _parse("""
# bedside exam template phrases, each naming the system examined
mental status: alert | awake | oriented | alert and oriented | awake and alert | a&o | aox3 | a&ox3 | oriented x3 | oriented x 3 | oriented times three | lucid | cooperative | confused | lethargic | agitated | somnolent | obtunded
general appearance: well-appearing | well appearing | ill-appearing | acutely ill | comfortable | well-nourished | well nourished | well-developed
temperature: afebrile
pupils: perrla | perrl | perla | pupils equal round and reactive to light | pupils equal and reactive
extraocular movements: eomi | extraocular movements intact
head: normocephalic | atraumatic | ncat | normocephalic atraumatic
neck: supple
heart rhythm: regular rate and rhythm | rrr | normal sinus rhythm | sinus rhythm | nsr | irregularly irregular | sinus tachycardia | sinus bradycardia
lungs: clear to auscultation | clear to auscultation bilaterally | ctab | cta | clear to auscultation and percussion
abdomen: nontender | nondistended | non-tender | non-distended | ntnd
bowel sounds: positive bowel sounds | normoactive bowel sounds | bowel sounds present | hypoactive bowel sounds | hyperactive bowel sounds
neurologic: neurologically intact | nonfocal | non-focal | grossly intact
vital signs: hemodynamically stable | vital signs stable | vss | stable vital signs | afebrile vital signs stable
""")


class FindingMatcher:
    """Structure + qualifier statements and template phrases over one sentence's tokens."""

    def __init__(self) -> None:
        from trillium.medical.records.entities import TermMatcher

        self._structures = TermMatcher(STRUCTURES, "finding")
        # a template entry's name is the system examined ("lungs"), not a phrase to find
        self._templates = TermMatcher({k: v[1:] for k, v in TEMPLATE_FINDINGS.items()}, "finding")

    @staticmethod
    def _is_qualifier(tok: str) -> bool:
        return tok in QUALIFIERS

    def find(self, tokens: Sequence[Token]) -> list[tuple[int, int, str, dict]]:
        """(first token, last token inclusive, structure, values) of each finding."""
        low = [t.lower for t in tokens]
        out: list[tuple[int, int, str, dict]] = []
        for first, last, canonical in self._templates.find(tokens):
            out.append((first, last, canonical, {"structure": canonical,
                                                 "qualifiers": [" ".join(low[first:last + 1])]}))
        for first, last, canonical in self._structures.find(tokens):
            quals: list[str] = []
            end = last
            j = last + 1
            while j < len(low) and j - end <= 6 and (low[j] in ATTRIBUTES or low[j] in LINKS):
                j += 1  # "... wall thickness is mildly ..."
            while j < len(low) and self._is_qualifier(low[j]):
                quals.append(low[j])
                end = j
                j += 1
                k = j
                while k < len(low) and low[k] in {",", "and", "or"} | LINKS and k - j < 3:
                    k += 1  # "soft, nontender, and nondistended"
                if k < len(low) and self._is_qualifier(low[k]):
                    j = k
            start = first
            b = first - 1
            while b >= 0 and low[b] in LINKS - {",", "and", "is", "are", "was", "were"}:
                b -= 1
            if b >= 0 and self._is_qualifier(low[b]):  # "thickened aortic valve"
                quals.insert(0, low[b])
                start = b
            if quals:
                out.append((start, end, canonical, {"structure": canonical, "qualifiers": quals}))
        return out
