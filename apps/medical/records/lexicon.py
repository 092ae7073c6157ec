"""Lexicons written for Trillium: problems, medications, procedures, labs, vital signs, units.

Each entry maps a canonical name to the ways clinicians write it (abbreviations, brand names,
plurals are added by the matcher). The lists are deliberately ordinary clinical vocabulary,
not a terminology server: enough for the common content of admission, clinic and discharge
notes, and easy to extend by passing more entries to ``EntityExtractor``.
"""

from __future__ import annotations


def _parse(block: str) -> dict[str, tuple[str, ...]]:
    """``canonical: synonym | synonym`` lines -> {canonical: (canonical, synonyms...)}."""
    out: dict[str, tuple[str, ...]] = {}
    for raw in block.strip().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, syns = line.partition(":")
        name = name.strip()
        terms = [name] + [s.strip() for s in syns.split("|") if s.strip()]
        out[name] = tuple(dict.fromkeys(terms))
    return out


PROBLEMS = _parse("""
hypertension: htn | high blood pressure | elevated blood pressure | essential hypertension | hypertensive disease
hypotension: low blood pressure
diabetes mellitus: diabetes | dm | diabetic
type 2 diabetes mellitus: type 2 diabetes | type ii diabetes | dm2 | dm 2 | t2dm | niddm | diabetes mellitus type 2 | diabetes mellitus type ii | adult onset diabetes
type 1 diabetes mellitus: type 1 diabetes | type i diabetes | dm1 | t1dm | iddm | diabetes mellitus type 1
hyperlipidemia: hld | high cholesterol | hypercholesterolemia | dyslipidemia | elevated cholesterol | increased cholesterol | hypertriglyceridemia
coronary artery disease: cad | coronary disease | ischemic heart disease | coronary atherosclerosis | ashd
myocardial infarction: mi | heart attack | stemi | nstemi | acute myocardial infarction | ami | acute mi
congestive heart failure: chf | heart failure | cardiac failure | hfref | hfpef | systolic heart failure | diastolic heart failure | cardiomyopathy
atrial fibrillation: afib | a-fib | af | a fib | paroxysmal atrial fibrillation
atrial flutter: aflutter
arrhythmia: dysrhythmia | palpitations | tachycardia | bradycardia | svt | supraventricular tachycardia | ventricular tachycardia
angina: angina pectoris | unstable angina | stable angina
acute coronary syndrome: acs
chest pain: chest discomfort | chest pressure | chest tightness | substernal chest pain | cp
shortness of breath: sob | dyspnea | breathlessness | dyspnea on exertion | doe | short of breath | orthopnea | paroxysmal nocturnal dyspnea | pnd
edema: swelling | peripheral edema | pedal edema | leg swelling | lower extremity edema | ankle swelling
syncope: fainting | passed out | loss of consciousness | loc | presyncope | near syncope
stroke: cva | cerebrovascular accident | cerebral infarction | ischemic stroke | hemorrhagic stroke
transient ischemic attack: tia | mini stroke
peripheral vascular disease: pvd | pad | peripheral arterial disease | claudication
deep vein thrombosis: dvt | deep venous thrombosis | venous thrombosis
pulmonary embolism: pe | pulmonary embolus | pulmonary emboli
aortic stenosis: as
mitral regurgitation: mr | mitral valve regurgitation
heart murmur: murmur | murmurs
copd: chronic obstructive pulmonary disease | emphysema | chronic bronchitis | chronic airway obstruction
asthma: reactive airway disease | rad | bronchospasm
pneumonia: pna | cap | community acquired pneumonia | infiltrate | infiltrates | consolidation
# kinds of pneumonia with codes of their own (J69.0, J18.1, J18.0), once lumped above under J18.9
aspiration pneumonia:
lobar pneumonia:
bronchopneumonia:
bronchitis: acute bronchitis
upper respiratory infection: uri | upper respiratory tract infection | common cold | head cold | cold symptoms
cough: coughing | productive cough | dry cough | hemoptysis
wheezing: wheeze | wheezes
pleural effusion: effusion | effusions | pleural effusions
pneumothorax: ptx
lung cancer: lung carcinoma | non-small cell lung cancer | nsclc | small cell lung cancer | bronchogenic carcinoma
pulmonary nodule: lung nodule | pulmonary nodules | lung nodules | lung mass | pulmonary mass | ground-glass opacity | ground glass opacity | ggo | ground-glass nodule | ground glass nodule | part-solid nodule | subsolid nodule
obstructive sleep apnea: osa | sleep apnea
tuberculosis: tb
sarcoidosis: sarcoid
fever: fevers | febrile | pyrexia | temperature elevation | elevated temperature | increased temperature | high temperature
chills: rigors
fatigue: tiredness | malaise | lethargy | weakness | generalized weakness
weight loss: unintentional weight loss | unintended weight loss
weight gain:
headache: headaches | cephalgia | migraine | migraines | migraine headache
dizziness: vertigo | lightheadedness | light-headedness | lightheaded | dizzy
seizure: seizures | epilepsy | seizure disorder | convulsion | convulsions
dementia: alzheimer's disease | alzheimer disease | alzheimers | memory loss | cognitive impairment
parkinson's disease: parkinson disease | parkinsonism | parkinsons
multiple sclerosis: ms
neuropathy: peripheral neuropathy | diabetic neuropathy | numbness | tingling | paresthesia | paresthesias
focal neurologic deficit: focal deficit | focal neurologic deficits | focal deficits | focal neurological deficit | hemiparesis | hemiplegia | facial droop | aphasia | dysarthria
back pain: low back pain | lumbago | lbp | lumbar pain
neck pain: cervicalgia
radiculopathy: sciatica | lumbar radiculopathy | cervical radiculopathy
spinal stenosis: lumbar stenosis | cervical stenosis
herniated disc: disc herniation | herniated nucleus pulposus | hnp | bulging disc
osteoarthritis: oa | degenerative joint disease | djd | arthritis | degenerative arthritis
rheumatoid arthritis: ra
osteoporosis: osteopenia | osteoporotic
gout: gouty arthritis
fracture: fractures | fx | broken bone | hip fracture | wrist fracture | rib fracture | compression fracture
knee pain: knee injury
meniscal tear: meniscus tear | torn meniscus | medial meniscus tear | lateral meniscus tear
acl tear: anterior cruciate ligament tear | acl rupture | acl injury
rotator cuff tear: rotator cuff injury | rotator cuff tendinopathy
shoulder pain:
hip pain:
joint pain: arthralgia | arthralgias | joint pains
carpal tunnel syndrome: cts | carpal tunnel
sprain: ankle sprain | strain
tendinitis: tendonitis | tendinopathy
bursitis:
gastroesophageal reflux disease: gerd | reflux | acid reflux | heartburn | esophageal reflux
peptic ulcer disease: pud | peptic ulcer | gastric ulcer | duodenal ulcer
gastritis:
esophagitis:
dysphagia: difficulty swallowing | odynophagia
abdominal pain: abd pain | stomach pain | belly pain | epigastric pain | right upper quadrant pain | ruq pain | left lower quadrant pain | llq pain | right lower quadrant pain | rlq pain
nausea: nauseated | nauseous
vomiting: emesis | hematemesis
nausea and vomiting: n/v | nausea/vomiting
diarrhea: loose stools
constipation:
gastrointestinal bleeding: gi bleed | gi bleeding | upper gi bleed | lower gi bleed | melena | hematochezia | rectal bleeding | bright red blood per rectum | brbpr
irritable bowel syndrome: ibs
inflammatory bowel disease: ibd | crohn's disease | crohn disease | crohns | ulcerative colitis | uc
diverticulitis:
diverticulosis: diverticular disease | diverticula | diverticuli | colonic diverticula
# third round: common report and exam terms that had no entry
hemorrhage: bleeding | bleed | hemorrhaging
aneurysm: aneurysms | aneurysmal dilation | aneurysmal dilatation
cardiac tamponade: tamponade | pericardial tamponade
arteriovenous malformation: avm | avms | arteriovenous malformations
pneumoperitoneum: free air | free intraperitoneal air | free intra-abdominal air | free intraabdominal air
premature ventricular contractions: pvc | pvcs | premature ventricular contraction | premature ventricular beats | ventricular premature beats
altered mental status: ams | mental status changes | mental status change | change in mental status | altered mentation
deconditioning: deconditioned | decondition | physical deconditioning | debility
hemorrhoidal skin tags: hemorrhoidal tags | anal skin tags | anal tags | perianal skin tags
difficulty concentrating: trouble concentrating | poor concentration | inability to concentrate | difficulty focusing | trouble focusing | decreased concentration
fluid overload: volume overload | volume overloaded | fluid overloaded | hypervolemia | hypervolemic
malnutrition: malnourished | undernourished | undernutrition | protein calorie malnutrition
vasovagal syncope: vasovagal | vasovagal episode | vasovagal reaction | vasovagal attack
degenerative disc disease: ddd | degenerative disk disease | disc degeneration | disk degeneration | degenerative discs | degenerative disks
disc bulge: disc bulges | disk bulge | disk bulges | bulging disc | bulging disk | disc protrusion | disk protrusion
foraminal stenosis: foraminal narrowing | neural foraminal narrowing | neural foraminal stenosis
st elevation: st elevations | st segment elevation | st segment elevations | st-segment elevation
st depression: st depressions | st segment depression | st segment depressions | st-segment depression
thrombus: thrombi | intraluminal thrombus | mural thrombus
sickle cell crisis: sickle cell pain crisis | sickle crisis | vaso-occlusive crisis | vasoocclusive crisis
sputum production: productive of sputum | phlegm
viral syndrome: viral illness
liver transplant: liver transplantation | orthotopic liver transplant | orthotopic liver transplantation
heart transplant: heart transplantation | cardiac transplant | orthotopic heart transplant | orthotopic heart transplantation
kidney transplant: kidney transplantation | renal transplant | renal transplantation
lung transplant: lung transplantation
colon polyps: colon polyp | colonic polyps | polyp | polyps | adenomatous polyp
colon cancer: colorectal cancer | colon carcinoma | rectal cancer | adenocarcinoma of the colon
hepatitis:
hepatitis c: hcv | hep c | chronic hepatitis c
hepatitis b: hbv | hep b | chronic hepatitis b
cirrhosis: liver cirrhosis | end-stage liver disease | esld | fatty liver | hepatic steatosis | nafld
pancreatitis: acute pancreatitis | chronic pancreatitis
cholecystitis: cholelithiasis | gallstones | biliary colic | choledocholithiasis
appendicitis:
hernia:
# kinds of hernia with codes of their own, once lumped above under the bare hernia
inguinal hernia:
umbilical hernia:
ventral hernia:
incisional hernia:
hiatal hernia: hiatus hernia
bowel obstruction: small bowel obstruction | sbo | ileus
jaundice: icterus | hyperbilirubinemia
anemia: iron deficiency anemia | low hemoglobin | anaemia
thrombocytopenia: low platelets
thrombocytosis: elevated platelet count
leukocytosis: elevated white count | elevated wbc
coagulopathy: bleeding disorder
chronic kidney disease: ckd | chronic renal insufficiency | chronic renal failure | renal insufficiency | esrd | end-stage renal disease
acute kidney injury: aki | acute renal failure | arf
urinary tract infection: uti | cystitis | pyelonephritis | urinary infection
kidney stones: nephrolithiasis | renal calculi | kidney stone | urolithiasis | renal colic | ureteral stone
benign prostatic hyperplasia: bph | enlarged prostate | prostatic hypertrophy
prostate cancer: prostate carcinoma | adenocarcinoma of the prostate | elevated psa
hematuria: blood in urine | gross hematuria | microscopic hematuria
urinary incontinence: incontinence | stress incontinence | urge incontinence
urinary retention: retention
erectile dysfunction: ed | impotence
dysuria: painful urination | burning on urination
urinary frequency: frequency | urgency | nocturia
hypothyroidism: hypothyroid | underactive thyroid | hashimoto's thyroiditis
hyperthyroidism: hyperthyroid | graves disease | graves' disease | thyrotoxicosis
thyroid nodule: thyroid nodules | goiter
obesity: obese | morbid obesity | overweight
hyperglycemia: high blood sugar | elevated glucose
hypoglycemia: low blood sugar
diabetic ketoacidosis: dka
hyponatremia: low sodium
hyperkalemia: high potassium
hypokalemia: low potassium
dehydration: volume depletion | hypovolemia
depression: major depressive disorder | mdd | depressed mood | depressive disorder
anxiety: anxiety disorder | generalized anxiety disorder | gad | panic attacks | panic disorder
bipolar disorder: bipolar | manic depression
schizophrenia:
insomnia: sleep disturbance | difficulty sleeping
alcohol abuse: alcoholism | alcohol dependence | etoh abuse | alcohol use disorder
alcohol use: alcohol | etoh | drinks alcohol | alcohol consumption
drug abuse: substance abuse | drug use | illicit drug use | ivdu | polysubstance abuse
tobacco use: smoking | smoker | tobacco | cigarette smoking | nicotine dependence | tobacco abuse
breast cancer: breast carcinoma | breast mass | breast lump | ductal carcinoma
ovarian cyst: ovarian cysts | adnexal mass
endometriosis:
uterine fibroids: fibroids | leiomyoma | leiomyomata | fibroid uterus
pregnancy: pregnant | intrauterine pregnancy | gestation
preeclampsia: pre-eclampsia | pregnancy induced hypertension | gestational hypertension
gestational diabetes: gdm
vaginal bleeding: abnormal uterine bleeding | menorrhagia | metrorrhagia | postmenopausal bleeding | dysfunctional uterine bleeding
pelvic pain: dysmenorrhea
vaginitis: yeast infection | bacterial vaginosis | vaginal discharge
infertility:
miscarriage: spontaneous abortion
rash: rashes | eruption | skin rash | erythema | maculopapular rash | urticaria | hives
dermatitis: eczema | atopic dermatitis | contact dermatitis | seborrheic dermatitis
psoriasis: plaque psoriasis
cellulitis: skin infection | abscess
acne: acne vulgaris
skin lesion: skin lesions | mole | nevus | nevi | atypical nevus
lesion: lesions
melanoma: malignant melanoma
basal cell carcinoma: bcc
squamous cell carcinoma: scc
actinic keratosis: actinic keratoses | seborrheic keratosis
pruritus: itching | itchy
wound: decubitus ulcer | pressure ulcer | diabetic foot ulcer | laceration | wound infection
ulcer: ulcers | ulceration
sepsis: septic | septicemia | bacteremia | septic shock
infection: infections
cancer: carcinoma | malignancy
metastatic disease: metastases | metastasis | metastatic cancer
neoplasm: tumor | tumour | neoplasms
lymphoma: non-hodgkin lymphoma | hodgkin lymphoma
leukemia:
chronic lymphocytic leukemia: cll
congenital heart disease: congenital heart defect | congenital heart defects
obstructive jaundice:
hiv: human immunodeficiency virus | aids
cataract: cataracts
glaucoma:
macular degeneration:
hearing loss: hard of hearing | deafness
sinusitis: sinus infection
pharyngitis: sore throat | strep throat
otitis media: ear infection
allergic rhinitis: seasonal allergies | hay fever
chest wall pain: costochondritis
pain: ache | aches | discomfort
trauma: injury | injuries
fall: falls
""")

MEDICATIONS = _parse("""
lisinopril: prinivil | zestril
enalapril: vasotec
ramipril: altace
benazepril: lotensin
losartan: cozaar
valsartan: diovan
irbesartan: avapro
olmesartan: benicar
amlodipine: norvasc
nifedipine: procardia
diltiazem: cardizem
verapamil: calan
metoprolol: lopressor | toprol | toprol xl | metoprolol succinate | metoprolol tartrate
atenolol: tenormin
carvedilol: coreg
propranolol: inderal
labetalol:
hydrochlorothiazide: hctz | microzide
chlorthalidone:
furosemide: lasix
bumetanide: bumex
torsemide: demadex
spironolactone: aldactone
hydralazine:
clonidine: catapres
isosorbide mononitrate: imdur
nitroglycerin: ntg | nitro | nitrostat
digoxin: lanoxin
amiodarone: cordarone
atorvastatin: lipitor
simvastatin: zocor
rosuvastatin: crestor
pravastatin: pravachol
ezetimibe: zetia
aspirin: asa | acetylsalicylic acid | baby aspirin | ecotrin
clopidogrel: plavix
ticagrelor: brilinta
warfarin: coumadin
apixaban: eliquis
rivaroxaban: xarelto
dabigatran: pradaxa
heparin: unfractionated heparin
enoxaparin: lovenox
metformin: glucophage
glipizide: glucotrol
glyburide:
glimepiride: amaryl
sitagliptin: januvia
pioglitazone: actos
empagliflozin: jardiance
dapagliflozin: farxiga
liraglutide: victoza
semaglutide: ozempic
insulin glargine: lantus | basaglar | toujeo
insulin lispro: humalog
insulin aspart: novolog
insulin: regular insulin | nph insulin | humulin | novolin | insulin sliding scale
levothyroxine: synthroid | levoxyl | l-thyroxine
methimazole: tapazole
prednisone: deltasone
methylprednisolone: solu-medrol | medrol
dexamethasone: decadron
hydrocortisone:
albuterol: proventil | ventolin | proair | albuterol inhaler | albuterol nebulizer
ipratropium: atrovent
tiotropium: spiriva
fluticasone: flovent | flonase
fluticasone/salmeterol: advair
budesonide/formoterol: symbicort
montelukast: singulair
omeprazole: prilosec
pantoprazole: protonix
esomeprazole: nexium
lansoprazole: prevacid
famotidine: pepcid
ranitidine: zantac
ondansetron: zofran
metoclopramide: reglan
promethazine: phenergan
docusate: colace
senna: senokot
polyethylene glycol: miralax
lactulose:
loperamide: imodium
acetaminophen: tylenol | apap | paracetamol
ibuprofen: motrin | advil
naproxen: aleve | naprosyn
meloxicam: mobic
celecoxib: celebrex
ketorolac: toradol
diclofenac: voltaren
tramadol: ultram
oxycodone: oxycontin | roxicodone
hydrocodone/acetaminophen: norco | vicodin | lortab | hydrocodone
oxycodone/acetaminophen: percocet
morphine: ms contin
hydromorphone: dilaudid
fentanyl: duragesic
codeine:
gabapentin: neurontin
pregabalin: lyrica
cyclobenzaprine: flexeril
methocarbamol: robaxin
baclofen:
tizanidine: zanaflex
sertraline: zoloft
fluoxetine: prozac
citalopram: celexa
escitalopram: lexapro
paroxetine: paxil
venlafaxine: effexor
duloxetine: cymbalta
bupropion: wellbutrin
trazodone: desyrel
mirtazapine: remeron
amitriptyline: elavil
nortriptyline: pamelor
alprazolam: xanax
lorazepam: ativan
clonazepam: klonopin
diazepam: valium
zolpidem: ambien
quetiapine: seroquel
olanzapine: zyprexa
risperidone: risperdal
aripiprazole: abilify
haloperidol: haldol
lithium:
levetiracetam: keppra
phenytoin: dilantin
carbamazepine: tegretol
lamotrigine: lamictal
valproic acid: depakote | valproate | divalproex
topiramate: topamax
donepezil: aricept
memantine: namenda
carbidopa/levodopa: sinemet
sumatriptan: imitrex
amoxicillin: amoxil
amoxicillin/clavulanate: augmentin
penicillin: pcn | penicillin v | pen vk
ampicillin:
piperacillin/tazobactam: zosyn
cephalexin: keflex
cefazolin: ancef
ceftriaxone: rocephin
cefdinir: omnicef
azithromycin: zithromax | z-pak | zpak
clarithromycin: biaxin
erythromycin:
doxycycline: vibramycin
minocycline:
ciprofloxacin: cipro
levofloxacin: levaquin
moxifloxacin: avelox
sulfamethoxazole/trimethoprim: bactrim | septra | tmp-smx | smx-tmp
nitrofurantoin: macrobid | macrodantin
metronidazole: flagyl
clindamycin: cleocin
vancomycin: vanco
linezolid: zyvox
fluconazole: diflucan
acyclovir: zovirax
valacyclovir: valtrex
oseltamivir: tamiflu
tamsulosin: flomax
finasteride: proscar
oxybutynin: ditropan
tolterodine: detrol
sildenafil: viagra
tadalafil: cialis
alendronate: fosamax
calcium carbonate: calcium | tums | os-cal
vitamin d: cholecalciferol | ergocalciferol | vitamin d3
ferrous sulfate: iron | iron sulfate | feso4
folic acid: folate
vitamin b12: cyanocobalamin | b12
multivitamin: mvi | multivitamins
potassium chloride: kcl | k-dur | klor-con
magnesium oxide: magnesium
allopurinol: zyloprim
colchicine: colcrys
hydroxychloroquine: plaquenil
methotrexate:
adalimumab: humira
estradiol: estrace | estrogen
medroxyprogesterone: provera | depo-provera
oral contraceptives: ocp | ocps | birth control pills | oral contraceptive
prenatal vitamins: prenatal vitamin | pnv
oxytocin: pitocin
cetirizine: zyrtec
loratadine: claritin
diphenhydramine: benadryl
hydroxyzine: atarax | vistaril
triamcinolone: kenalog
hydrocortisone cream:
mupirocin: bactroban
clobetasol: temovate
tretinoin: retin-a
isotretinoin: accutane
ketoconazole: nizoral
terbinafine: lamisil
nicotine patch: nicoderm
varenicline: chantix
""")

PROCEDURES = _parse("""
cardiac catheterization: heart catheterization | left heart catheterization | cardiac cath | cath | coronary angiography | coronary angiogram
percutaneous coronary intervention: pci | angioplasty | stent placement | coronary stent | stent | stenting | ptca
coronary artery bypass graft: cabg | bypass surgery | coronary bypass
echocardiogram: echo | transthoracic echocardiogram | tte | transesophageal echocardiogram | tee | echocardiography
electrocardiogram: ekg | ecg | 12-lead ekg
stress test: exercise stress test | nuclear stress test | stress echocardiogram | treadmill test
pacemaker placement: pacemaker | pacemaker insertion | icd placement | defibrillator
cardioversion:
ablation: catheter ablation
chest x-ray: cxr | chest radiograph | chest film
ct scan: ct | computed tomography | cat scan | ct of the chest | ct chest | ct of the abdomen | ct abdomen and pelvis | ct of the head | head ct | ct angiogram | cta
mri: magnetic resonance imaging | mri of the brain | mri brain | mri of the lumbar spine | mri of the knee | mri of the cervical spine | mri of the shoulder | mr brain | mr head | mr of the brain | mr spine | mr angiogram | mr angiography | mra | mr venogram | mrcp
ultrasound: sonogram | us | ultrasonography | doppler | duplex ultrasound | pelvic ultrasound | transvaginal ultrasound | renal ultrasound | abdominal ultrasound
x-ray: x-rays | radiograph | radiographs | plain films
pulmonary function tests: pft | pfts | spirometry
bronchoscopy:
thoracentesis:
paracentesis:
lumbar puncture: lp | spinal tap
eeg: electroencephalogram
emg: electromyography | nerve conduction study | ncs
colonoscopy:
egd: esophagogastroduodenoscopy | upper endoscopy | endoscopy
sigmoidoscopy: flexible sigmoidoscopy
ercp: endoscopic retrograde cholangiopancreatography
biopsy: biopsies | skin biopsy | punch biopsy | shave biopsy | excisional biopsy | needle biopsy | core biopsy | prostate biopsy | breast biopsy | liver biopsy | bone marrow biopsy
excision: wide local excision | mohs surgery | mohs
cholecystectomy: laparoscopic cholecystectomy | lap chole
appendectomy: laparoscopic appendectomy
hernia repair: inguinal hernia repair | herniorrhaphy | hernioplasty
colectomy: hemicolectomy | bowel resection | sigmoid colectomy
gastric bypass: bariatric surgery | sleeve gastrectomy
hysterectomy: total abdominal hysterectomy | tah | vaginal hysterectomy | laparoscopic hysterectomy | tah-bso
cesarean section: c-section | cesarean delivery | c section | lower transverse cesarean section
vaginal delivery: normal spontaneous vaginal delivery | nsvd | svd
dilation and curettage: d&c | d and c
tubal ligation: btl | bilateral tubal ligation
laparoscopy: diagnostic laparoscopy
laparotomy: exploratory laparotomy | ex lap
mastectomy: total mastectomy | radical mastectomy | modified radical mastectomy
lumpectomy: partial mastectomy | breast-conserving surgery | breast conserving surgery
mammogram: mammography | screening mammogram
pap smear: pap | pap test
cystoscopy:
transurethral resection of the prostate: turp
prostatectomy: radical prostatectomy
lithotripsy: eswl | ureteroscopy
nephrectomy:
vasectomy:
urinalysis: ua | urine analysis
urine culture:
blood cultures: blood culture
total knee arthroplasty: tka | total knee replacement | tkr | knee replacement
total hip arthroplasty: tha | total hip replacement | thr | hip replacement
arthroscopy: knee arthroscopy | shoulder arthroscopy | arthroscopic surgery | arthroscopic
acl reconstruction: anterior cruciate ligament reconstruction
rotator cuff repair:
meniscectomy: partial meniscectomy
open reduction internal fixation: orif
carpal tunnel release:
spinal fusion: lumbar fusion | cervical fusion | fusion
laminectomy: discectomy | microdiscectomy | decompression
epidural steroid injection: esi | epidural injection
joint injection: steroid injection | cortisone injection | corticosteroid injection | intra-articular injection
physical therapy: pt | physiotherapy | occupational therapy
cast: casting | splint | splinting
craniotomy:
carotid endarterectomy: cea
thyroidectomy:
dialysis: hemodialysis | hd | peritoneal dialysis
intubation: mechanical ventilation | endotracheal intubation | intubated
blood transfusion: transfusion | prbc | packed red blood cells
chemotherapy: chemo
radiation therapy: radiation | radiotherapy | xrt
vaccination: immunization | flu shot | influenza vaccine | pneumovax | tetanus shot | tdap
incision and drainage: i&d | i and d
cryotherapy: liquid nitrogen
tonsillectomy: adenotonsillectomy
""")

LABS = _parse("""
hemoglobin: hgb | hb | hemoglobin level
hematocrit: hct
white blood cell count: wbc | white count | white blood cells | white cell count | leukocytes
platelet count: platelets | plt | plts
sodium: na | serum sodium
potassium: k | serum potassium
chloride: cl
bicarbonate: hco3 | co2 | bicarb
blood urea nitrogen: bun | urea
creatinine: cr | creat | serum creatinine
glucose: blood glucose | blood sugar | fasting glucose | fingerstick glucose | fsbs | accucheck | bg
hemoglobin a1c: hba1c | a1c | glycated hemoglobin | glycosylated hemoglobin | hgb a1c
calcium: ca | serum calcium
magnesium: mg level
phosphorus: phos
albumin: alb
total bilirubin: bilirubin | tbili | t bili
alkaline phosphatase: alk phos | alp
ast: sgot | aspartate aminotransferase
alt: sgpt | alanine aminotransferase
lipase:
amylase:
troponin: troponin i | troponin t | trop | tni
bnp: brain natriuretic peptide | nt-probnp | pro-bnp
inr: pt/inr
ptt: aptt | partial thromboplastin time
tsh: thyroid stimulating hormone
free t4: ft4 | t4
total cholesterol: cholesterol
ldl: ldl cholesterol | ldl-c
hdl: hdl cholesterol | hdl-c
triglycerides: tg | trigs
psa: prostate specific antigen
esr: sed rate | erythrocyte sedimentation rate
crp: c-reactive protein
lactate: lactic acid
d-dimer: ddimer
ferritin:
vitamin d level: 25-hydroxyvitamin d | vitamin d 25-oh
uric acid:
egfr: gfr | estimated gfr
""")

VITAL_NAMES: dict[str, tuple[str, ...]] = {
    "blood_pressure": ("blood pressure", "bp", "b/p"),
    "heart_rate": ("heart rate", "hr", "pulse", "p", "pulse rate"),
    "respiratory_rate": ("respiratory rate", "rr", "respirations", "resp", "r", "respiration"),
    "temperature": ("temperature", "temp", "t", "tmax", "t max"),
    "oxygen_saturation": ("oxygen saturation", "o2 sat", "o2 sats", "o2 saturation", "spo2", "sao2", "sat", "sats",
                          "pulse ox", "pulse oximetry", "saturation", "saturating", "satting"),
    "weight": ("weight", "wt", "weighs"),
    "height": ("height", "ht"),
    "bmi": ("bmi", "body mass index"),
    "pain_score": ("pain score", "pain scale", "pain"),
}

ROUTES: dict[str, tuple[str, ...]] = {
    "oral": ("po", "p.o.", "p.o", "by mouth", "orally", "oral", "per os", "tab", "tablet", "tablets", "capsule",
             "capsules", "cap", "caps"),
    "intravenous": ("iv", "i.v.", "intravenous", "intravenously", "ivpb", "iv push"),
    "subcutaneous": ("subcutaneous", "subcutaneously", "subq", "sub-q", "sq", "s.q.", "sc", "s.c.", "subcut"),
    "intramuscular": ("im", "i.m.", "intramuscular", "intramuscularly"),
    "inhaled": ("inhaled", "inhaler", "inh", "nebulizer", "nebulized", "neb", "nebs", "mdi", "puff", "puffs", "inhalation"),
    "topical": ("topical", "topically", "cream", "ointment", "gel", "lotion", "apply"),
    "sublingual": ("sl", "sublingual", "sublingually"),
    "transdermal": ("transdermal", "patch"),
    "rectal": ("pr", "per rectum", "rectally", "suppository"),
    "ophthalmic": ("ophthalmic", "eye drops", "gtt", "gtts"),
    "nasal": ("nasal", "intranasal", "nasal spray"),
}

FREQUENCIES: dict[str, tuple[str, ...]] = {
    "daily": ("daily", "qd", "q.d.", "q.d", "once daily", "once a day", "every day", "qday", "q day", "per day",
              "a day", "once per day", "od", "each day", "qam", "q.a.m.", "every morning", "in the morning"),
    "BID": ("bid", "b.i.d.", "b.i.d", "twice daily", "twice a day", "two times a day", "2 times a day",
            "two times daily", "q12h", "q 12 h", "every 12 hours", "q12", "q 12h"),
    "TID": ("tid", "t.i.d.", "t.i.d", "three times daily", "three times a day", "3 times a day", "3 times daily",
            "q8h", "q 8 h", "every 8 hours", "q 8h"),
    "QID": ("qid", "q.i.d.", "q.i.d", "four times daily", "four times a day", "4 times a day", "4 times daily",
            "q6h", "q 6 h", "every 6 hours", "q 6h"),
    "QHS": ("qhs", "q.h.s.", "q.h.s", "at bedtime", "nightly", "every night", "hs", "h.s.", "at night",
            "before bed", "qpm", "q.p.m.", "every evening", "in the evening"),
    "Q4H": ("q4h", "q 4 h", "q 4h", "every 4 hours", "q4-6h", "q 4-6 h", "q4-6 h", "every 4 to 6 hours",
            "every 4-6 hours"),
    "Q2H": ("q2h", "every 2 hours"),
    "weekly": ("weekly", "once a week", "once weekly", "every week", "qweek", "q week", "qwk"),
    "monthly": ("monthly", "once a month", "every month"),
    "once": ("once", "x1", "x 1", "one time", "stat", "single dose"),
}

AS_NEEDED = ("prn", "p.r.n.", "p.r.n", "as needed", "as-needed", "when needed", "if needed", "as required")

DOSE_UNITS: dict[str, tuple[str, ...]] = {
    "mg": ("mg", "mgs", "milligram", "milligrams"),
    "mcg": ("mcg", "µg", "ug", "microgram", "micrograms"),
    "g": ("g", "gm", "gram", "grams", "gms"),
    "units": ("units", "unit", "u", "iu", "international units"),
    "mL": ("ml", "cc", "milliliter", "milliliters", "mls"),
    "mEq": ("meq", "milliequivalents"),
    "puffs": ("puff", "puffs"),
    "tablets": ("tablet", "tablets", "tab", "tabs", "pill", "pills"),
    "capsules": ("capsule", "capsules", "cap", "caps"),
    "drops": ("drop", "drops", "gtt", "gtts"),
    "%": ("%", "percent"),
    "sprays": ("spray", "sprays"),
    "patch": ("patch",),
}

EXAM_FINDINGS = _parse("""
# Physical-examination findings and their bedside abbreviations, written from general clinical
# knowledge (not from any evaluation set). Matched after the problems above; each is coded by the
# terminology index where one of its forms is an ICD-10-CM or HPO term (``terminology``).
rales: crackles | crepitations | rale | bibasilar rales | bibasilar crackles
rhonchi: rhonchus | coarse breath sounds
friction rub: rub | rubs | pericardial rub | pericardial friction rub | pleural rub | pleural friction rub
gallop: gallops | gallop rhythm | s3 | s4 | s3 gallop | s4 gallop | third heart sound | fourth heart sound
jugular venous distension: jvd | jugular venous distention | jugular venous pressure elevation | elevated jvp | elevated jugular venous pressure | distended neck veins
cyanosis: cyanotic
clubbing: digital clubbing | finger clubbing | clubbing of fingers
acute distress: distress | respiratory distress | apparent distress
afebrile:
lymphadenopathy: adenopathy | lymph node enlargement | enlarged lymph nodes | swollen lymph nodes
hepatomegaly: enlarged liver
splenomegaly: enlarged spleen
hepatosplenomegaly: organomegaly
tenderness: abdominal tenderness | rebound tenderness | rebound | guarding | cva tenderness | costovertebral angle tenderness
scleral icterus:
bruit: bruits | carotid bruit | carotid bruits | abdominal bruit | renal bruit
diaphoresis: diaphoretic | sweating
pallor: pale
tachypnea: tachypneic | accessory muscle use | use of accessory muscles
decreased breath sounds: diminished breath sounds | decreased air entry | absent breath sounds | reduced breath sounds
nuchal rigidity: neck stiffness | stiff neck | meningismus
hepatojugular reflux:
rash: skin rash | rashes | erythema | induration
ecchymosis: bruising | ecchymoses
dehydration: dry mucous membranes | poor skin turgor
lower extremity edema: pitting edema | trace edema | leg edema
thrill:
heave: parasternal heave | lift
distended abdomen: abdominal distension | abdominal distention | distension | distention
# imaging-report findings with no entry before (written from general radiology and echo reporting)
nodule: nodules
free fluid: free intraperitoneal fluid | free pelvic fluid
infarct: infarcts | infarction | lacunar infarct | lacunar infarcts
mass effect:
midline shift:
wall motion abnormality: wall motion abnormalities | hypokinesis | hypokinetic | akinesis | akinetic | dyskinesis | dyskinetic
""")

LAY_TERMS = _parse("""
# Everyday words for signs and symptoms, as patients say them and notes quote them, each under the
# clinical name whose code it takes (every form here means exactly that concept: no related
# concepts lumped, unlike some entries above). Written from general clinical knowledge of
# patient language (consumer health vocabularies), not from any evaluation set.
rhinorrhea: runny nose | running nose | nose running | nasal discharge
blurred vision: blurry vision | vision is blurry | vision blurry | blurriness of vision
nasal congestion: stuffy nose | blocked nose | congested nose | nose blocked | stuffed up nose
fatigue: tired | feeling tired | tiredness | exhausted | exhaustion | worn out | low energy | lack of energy | no energy
insomnia: trouble sleeping | difficulty sleeping | can't sleep | cannot sleep | unable to sleep | sleeplessness | poor sleep
syncope: fainted | fainting | faints | passed out | pass out | passing out | passes out | blacked out | blackout | blackouts
vomiting: throwing up | threw up | throw up | throws up | vomited | emesis
nausea: nauseated | nauseous | queasy | sick to her stomach | sick to his stomach | sick to my stomach
hematochezia: blood in stool | blood in the stool | blood in stools | bloody stool | bloody stools | bright red blood per rectum | brbpr
melena: black stools | black stool | tarry stools | tarry stool
hematuria: blood in urine | blood in the urine | bloody urine
hemoptysis: coughing up blood | coughed up blood | coughs up blood
hematemesis: vomiting blood | vomited blood | throwing up blood | coffee ground emesis
epistaxis: nosebleed | nosebleeds | nose bleed | nose bleeds | bloody nose
hyperglycemia: high blood sugar | high blood sugars | elevated blood sugar | blood sugar elevated | blood sugars elevated | high glucose | elevated glucose
hypoglycemia: low blood sugar | low blood sugars | low glucose
abdominal pain: belly pain | stomach pain | stomach ache | stomachache | tummy ache | tummy pain | bellyache
hearing loss: difficulty hearing | trouble hearing | reduced hearing | decreased hearing | loss of hearing | diminished hearing | hearing impairment
tinnitus: ringing in the ears | ringing in ears | ringing in his ears | ringing in her ears | ear ringing
paresthesia: pins and needles | pins-and-needles | tingling | tingling sensation
numbness: numb
dysphagia: trouble swallowing | difficulty swallowing | difficulty in swallowing
odynophagia: painful swallowing | pain with swallowing | pain on swallowing
dysuria: painful urination | burning on urination | burning with urination | burning urination | pain with urination | pain on urination
urinary frequency: frequent urination | urinating frequently | frequency of urination
nocturia: getting up at night to urinate | waking at night to urinate
urinary incontinence: leaking urine | leakage of urine | bladder leakage | loss of bladder control
pruritus: itchiness | itching
urticaria: hives | welts
anorexia: loss of appetite | poor appetite | decreased appetite | reduced appetite | diminished appetite | no appetite | lack of appetite
memory loss: forgetfulness | forgetful | memory problems | memory problem | trouble remembering
anxiety: anxious | nervousness | feeling anxious
depression: depressed mood | low mood | feeling down | feeling depressed
tremor: shakiness | trembling | tremors | tremulous
diarrhea: loose stools | loose stool | watery stools | watery stool | loose bowel movements
dyspnea: breathless | out of breath | trouble breathing | difficulty breathing | difficulty in breathing | hard to breathe | air hunger | winded
hypoxemia: hypoxia | hypoxic | low oxygen | low oxygen saturation | oxygen desaturation | desaturation | desaturations
night sweats: sweating at night | night sweat
confusion: disoriented | disorientation
dizziness: woozy | giddy | room spinning
palpitations: heart racing | racing heart | heart pounding | pounding heart | fluttering in chest | skipped beats
muscle cramp: leg cramp | leg cramps | muscle cramps | cramping | charley horse
weakness: feeling weak | loss of strength
# everyday names of common conditions
zoster: shingles | herpes zoster
viral gastroenteritis: stomach flu | stomach bug | tummy bug
nephrolithiasis: kidney stone | kidney stones | renal stone | renal stones
conjunctivitis: pink eye | pinkeye
herpes simplex labialis: cold sore | cold sores | fever blister | fever blisters
influenza: the flu | flu-like illness
cystitis: bladder infection
candidiasis: yeast infection | thrush
tinea pedis: athlete's foot | athletes foot
amblyopia: lazy eye
otitis externa: swimmer's ear | swimmers ear
impacted cerumen: ear wax impaction | impacted ear wax | impacted earwax | cerumen impaction
enuresis: bedwetting | bed wetting | bed-wetting
hypothyroidism: underactive thyroid | low thyroid
hyperthyroidism: overactive thyroid
thrombosis: blood clot | blood clots
pneumothorax: collapsed lung
radiculopathy: pinched nerve
halitosis: bad breath
pressure ulcer: bed sore | bed sores | bedsore | bedsores
hemorrhoids: piles
varicella: chickenpox | chicken pox
infectious mononucleosis: mono | glandular fever
pediculosis: head lice | lice
heatstroke: heat stroke | sunstroke
whooping cough: pertussis
viral wart: wart | warts
fracture: broken bone | broken bones | broken arm | broken leg | broken wrist | broken ankle | broken hip | broken rib | broken ribs | broken nose | broken finger | broken toe | broken collarbone
""")

CODES: dict[str, tuple[str, str, str]] = {
    # Hand-lexicon entries whose default ICD-10-CM code the terminology rule does not reach:
    # ICD-10-CM lists plain hypertension only as "Essential (primary) hypertension" (its bare
    # "Hypertension" appears only in the alphabetic index, which the package does not ship).
    "hypertension": ("ICD-10-CM", "I10", "Essential (primary) hypertension"),
    "diabetes mellitus": ("ICD-10-CM", "E11.9", "Type 2 diabetes mellitus without complications"),
    # "Abnormal weight loss" / "Frequency of micturition" / "Unspecified hearing loss, unspecified
    # ear": the coder's default codes, whose descriptions word the concept differently
    "weight loss": ("ICD-10-CM", "R63.4", "Abnormal weight loss"),
    "weight gain": ("ICD-10-CM", "R63.5", "Abnormal weight gain"),
    "urinary frequency": ("ICD-10-CM", "R35.0", "Frequency of micturition"),
    "hearing loss": ("ICD-10-CM", "H91.90", "Unspecified hearing loss, unspecified ear"),
    "muscle cramp": ("ICD-10-CM", "R25.2", "Cramp and spasm"),
    # ICD-10-CM files the hiatal (hiatus) hernia under K44.9, worded "Diaphragmatic hernia without
    # obstruction or gangrene"; HPO's "Hiatus hernia" is the broader code the index would give
    "hiatal hernia": ("ICD-10-CM", "K44.9", "Diaphragmatic hernia without obstruction or gangrene"),
    "weakness": ("ICD-10-CM", "R53.1", "Weakness"),
    "herpes simplex labialis": ("ICD-10-CM", "B00.1", "Herpesviral vesicular dermatitis"),
    "numbness": ("ICD-10-CM", "R20.0", "Anesthesia of skin"),
    "diverticulosis": ("ICD-10-CM", "K57.90",
                       "Diverticulosis of intestine, part unspecified, without perforation or abscess without bleeding"),
    "hepatitis c": ("ICD-10-CM", "B19.20", "Unspecified viral hepatitis C without hepatic coma"),
    "hepatitis b": ("ICD-10-CM", "B19.10", "Unspecified viral hepatitis B without hepatic coma"),
    "chronic lymphocytic leukemia": ("ICD-10-CM", "C91.10",
                                    "Chronic lymphocytic leukemia of B-cell type not having achieved remission"),
    "congenital heart disease": ("ICD-10-CM", "Q24.9", "Congenital malformation of heart, unspecified"),
    "obstructive jaundice": ("ICD-10-CM", "K83.1", "Obstruction of bile duct"),
    "sickle cell crisis": ("ICD-10-CM", "D57.00", "Hb-SS disease with crisis, unspecified"),
    "sputum production": ("ICD-10-CM", "R09.3", "Abnormal sputum"),
    "viral syndrome": ("ICD-10-CM", "B34.9", "Viral infection, unspecified"),
    # chapter Z (status) is not indexed; a transplant is history a clinician expects coded
    "liver transplant": ("ICD-10-CM", "Z94.4", "Liver transplant status"),
    # bare words whose ICD-10-CM code names an unspecified site or a cause the index drops
    "aneurysm": ("ICD-10-CM", "I72.9", "Aneurysm of unspecified site"),
    "deconditioning": ("ICD-10-CM", "R53.81", "Other malaise"),
    "hemorrhoidal skin tags": ("ICD-10-CM", "K64.4", "Residual hemorrhoidal skin tags"),
    "difficulty concentrating": ("ICD-10-CM", "R41.840", "Attention and concentration deficit"),
    "heart transplant": ("ICD-10-CM", "Z94.1", "Heart transplant status"),
    "kidney transplant": ("ICD-10-CM", "Z94.0", "Kidney transplant status"),
    "lung transplant": ("ICD-10-CM", "Z94.2", "Lung transplant status"),
    # a written form under a broader entry with a code of its own (ICD-10-CM codes diabetes of
    # unstated type as type 2, E11, by its guidelines)
    "diabetic neuropathy": ("ICD-10-CM", "E11.40", "Type 2 diabetes mellitus with diabetic neuropathy, unspecified"),
}
"""(code system, code, preferred name) of the few hand-lexicon entries coded by hand; a key that is
not an entry's name is a written form, coded so wherever it is matched (``EntityExtractor``)."""
